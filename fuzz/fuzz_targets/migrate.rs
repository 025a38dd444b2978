#![no_main]
//! migrate on an arbitrary Atlassian autoscaler config (and job template): never panic,
//! whatever YAML (aliases, merge keys, deep nesting) comes in.
use bbrunner_core::migrate::migrate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (config, template) = text.split_once("\n---8<---\n").unwrap_or((text, ""));
        let _ = migrate(config, (!template.is_empty()).then_some(template));
    }
});
