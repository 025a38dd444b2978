#![no_main]
//! The UI-command parser on arbitrary text: never panics, and every error renders.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = bbrunner_core::import::parse_docker_command(text)
    {
        let _ = e.to_string();
    }
});
