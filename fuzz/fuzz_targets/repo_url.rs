//! Fuzzes `RepoUrl::parse`: never panics, and whatever it accepts is a fixed
//! point of normalisation with the promised shape.
#![no_main]

use fluxgate_platform_defaults::rules::{MAX_REPO_URL_LEN, RepoUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = RepoUrl::parse(input) else {
        return;
    };
    let text = url.as_str();
    assert!(text.len() <= MAX_REPO_URL_LEN, "{text}");
    assert_eq!(url.to_string(), text);
    assert!(!text.contains(['?', '#', '\\', ' ']), "{text}");
    assert!(text.is_ascii(), "{text}");
    assert!(!url.segments().is_empty(), "{text}");
    for segment in url.segments() {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{text}"
        );
        assert!(!segment.contains('/'), "{text}");
    }
    assert_eq!(url.host(), url.host().to_ascii_lowercase(), "{text}");
    // Normalisation is idempotent.
    match RepoUrl::parse(text) {
        Ok(again) => assert_eq!(again, url, "{input:?} -> {text}"),
        Err(e) => panic!("{input:?} -> {text} does not parse again: {e}"),
    }
    let _ = url.internal_reason();
});
