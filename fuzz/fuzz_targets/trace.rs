#![no_main]
//! The simulation trace reader on arbitrary text: never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bbrunner_core::simulate::parse_trace(text);
    }
});
