//! Fuzzes `check_branch_or_tag` and `check_commit`: never panic, and every
//! accepted name keeps git's rules.
#![no_main]

use fluxgate_platform_defaults::rules::{check_branch_or_tag, check_commit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if check_branch_or_tag(name).is_ok() {
        assert!(!name.is_empty() && name.len() <= 255);
        assert!(!name.starts_with(['-', '/']), "{name:?}");
        assert!(!name.ends_with(['/', '.']), "{name:?}");
        assert!(
            !name.contains("..") && !name.contains("@{") && !name.contains("//"),
            "{name:?}"
        );
        assert!(
            !name
                .chars()
                .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c)),
            "{name:?}"
        );
        assert!(
            name.split('/')
                .all(|c| !c.starts_with('.') && !c.ends_with(".lock")),
            "{name:?}"
        );
        assert!(name != "@" && name != "HEAD");
    }
    if check_commit(name).is_ok() {
        assert!(name.len() == 40 || name.len() == 64);
    }
});
