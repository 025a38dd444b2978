#![no_main]
//! lint and its MTU fix on arbitrary text: never panic; a fix is always valid YAML.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bbrunner_core::lint::lint(text, &[]);
        if let Some(fixed) = bbrunner_core::lint::fix_docker_mtu(text, 1400) {
            assert!(bbrunner_core::lint::yaml::load(&fixed).is_ok());
        }
    }
});
