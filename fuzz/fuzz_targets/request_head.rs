//! Fuzz target: see `portcullis::fuzzing::request_head` for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::request_head(data));
