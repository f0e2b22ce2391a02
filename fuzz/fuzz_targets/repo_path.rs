//! Fuzzes `normalize_repo_path`: never panics, never yields a path that
//! leaves the repository, and is idempotent.
#![no_main]

use fluxgate_platform_defaults::rules::normalize_repo_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_repo_path(input) else {
        return;
    };
    assert!(!path.is_empty());
    assert!(!path.starts_with('/'), "{input:?} -> {path:?}");
    assert!(!path.contains('\\'), "{input:?} -> {path:?}");
    assert!(!path.chars().any(char::is_control), "{input:?} -> {path:?}");
    if path != "." {
        assert!(
            path.split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{input:?} -> {path:?}"
        );
    }
    assert_eq!(normalize_repo_path(&path).as_deref(), Ok(path.as_str()));
});
