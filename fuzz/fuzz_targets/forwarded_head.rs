//! Fuzz target: see `portcullis::fuzzing::forwarded_head` for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::forwarded_head(data));
