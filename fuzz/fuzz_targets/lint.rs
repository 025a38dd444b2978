#![no_main]
//! lint and its MTU fix on arbitrary text: never panic; a fix is always valid YAML.
use bbrunner_core::lint::{DockerServiceImages, fix_docker_mtu, lint};
use bbrunner_core::yaml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let images = DockerServiceImages::default();
        let _ = lint(text, &[], &images);
        if let Ok(fixed) = fix_docker_mtu(text, 1400, &images) {
            assert!(yaml::load(&fixed).is_ok());
        }
    }
});
