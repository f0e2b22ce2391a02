//! Fuzzes a team repository's manifest file, read and validated as the
//! reconciler does. The body and its properties are
//! `fluxgate_fuzz::manifests` (src/lib.rs), shared with the stable replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxgate_fuzz::manifests(data));
