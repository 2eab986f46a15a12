//! Fuzz target: see `portcullis::fuzzing::path` for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::path(data));
