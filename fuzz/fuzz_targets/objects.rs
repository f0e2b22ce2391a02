//! Fuzzes whole PlatformDefaults and FluxConfig objects. The body and its properties are
//! `fluxgate_fuzz::objects` (src/lib.rs), shared with the stable replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxgate_fuzz::objects(data));
