//! Fuzzes `RepoUrl::parse`. The body and its properties are
//! `fluxgate_fuzz::repo_url` (src/lib.rs), shared with the stable replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxgate_fuzz::repo_url(data));
