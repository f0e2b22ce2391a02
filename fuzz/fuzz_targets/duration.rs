//! Fuzzes `parse_go_duration`: never panics (overflow included), and what it
//! accepts survives a round trip through `format_go_duration`.
#![no_main]

use fluxgate_platform_defaults::rules::{MAX_GO_DURATION, format_go_duration, parse_go_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(duration) = parse_go_duration(text) else {
        return;
    };
    assert!(duration <= MAX_GO_DURATION, "{text:?}");
    let formatted = format_go_duration(duration);
    assert_eq!(
        parse_go_duration(&formatted),
        Ok(duration),
        "{text:?} -> {formatted}"
    );
});
