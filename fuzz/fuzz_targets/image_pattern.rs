#![no_main]
//! The admin policy's image patterns: the glob the operator matches and the regex the
//! ValidatingAdmissionPolicy runs (RE2 semantics, as Go's and CEL's) agree on every image.
use bbrunner_core::admin_policy::ImagePattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((pattern, image)) = text.split_once('\n') else {
        return;
    };
    let Ok(pattern) = ImagePattern::parse(pattern) else {
        return;
    };
    let regex = regex::Regex::new(&pattern.regex()).expect("the regex of a pattern compiles");
    assert_eq!(
        pattern.matches(image),
        regex.is_match(image),
        "{:?} on {image:?}",
        pattern.regex()
    );
});
