//! Fuzzes `check_branch_or_tag` and `check_commit`. The body and its properties are
//! `fluxgate_fuzz::git_ref` (src/lib.rs), shared with the stable replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxgate_fuzz::git_ref(data));
