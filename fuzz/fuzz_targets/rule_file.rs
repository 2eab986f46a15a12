//! Fuzz target: see `portcullis::fuzzing::rule_file` for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::rule_file(data));
