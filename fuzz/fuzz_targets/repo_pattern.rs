//! Fuzzes `RepoPattern` and `NamePattern`: parsing and matching never panic,
//! the namespace only matters to patterns that use `{namespace}`, and a URL
//! written as a literal pattern matches itself.
//!
//! Input: `pattern \n url \n namespace` (missing parts are empty).
#![no_main]

use fluxgate_platform_defaults::rules::{
    MAX_PATTERN_LEN, NameKind, NamePattern, RepoPattern, RepoUrl,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = input.splitn(3, '\n');
    let pattern_text = parts.next().unwrap_or_default();
    let url_text = parts.next().unwrap_or_default();
    let namespace = parts.next().unwrap_or_default();

    let pattern = RepoPattern::parse(pattern_text);
    let url = RepoUrl::parse(url_text);
    if let (Ok(pattern), Ok(url)) = (&pattern, &url) {
        let matched = pattern.matches(url, namespace);
        let _ = pattern.allows_internal_host(url);
        if !pattern.uses_namespace() {
            assert_eq!(
                matched,
                pattern.matches(url, "some-other-ns"),
                "{pattern} {url}"
            );
        }
        assert_eq!(pattern.to_string(), pattern_text);
    }
    if let Ok(url) = &url {
        // The normalised URL, read as a pattern, names exactly that URL
        // (unless it has characters that are special in patterns, or is
        // longer than a pattern may be: URLs may have 2048 bytes, patterns
        // 512).
        if !url.as_str().contains(['*', '{', '}']) && url.as_str().len() <= MAX_PATTERN_LEN {
            match RepoPattern::parse(url.as_str()) {
                Ok(own) => {
                    assert!(own.matches(url, "ns"), "{url} does not match itself");
                    assert!(own.allows_internal_host(url), "{url}");
                }
                Err(e) => panic!("{url} is not a valid pattern: {e}"),
            }
        }
    }
    for kind in [NameKind::Namespace, NameKind::Cluster, NameKind::Image] {
        if let Ok(p) = NamePattern::parse(pattern_text, kind) {
            let matched = p.matches(url_text, namespace);
            if !p.uses_namespace() {
                assert_eq!(matched, p.matches(url_text, "some-other-ns"));
            }
            if p.is_literal() {
                assert!(p.matches(pattern_text, namespace), "{pattern_text}");
            }
            if let Some(expanded) = p.expand("team-a") {
                assert!(
                    p.matches(&expanded, "team-a"),
                    "{pattern_text} -> {expanded}"
                );
            }
        }
    }
});
