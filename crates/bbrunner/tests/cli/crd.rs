use crate::util::{bbrunner, kubernetes_validate_strict};

#[test]
fn the_crd_is_stable_and_strictly_valid() {
    let crd = bbrunner(&["crd"], "").success().stdout;
    kubernetes_validate_strict(&crd);
    // Any change to the RunnerPool schema shows up here for review.
    insta::assert_snapshot!(crd);
}

#[test]
fn the_crd_carries_its_validation_rules_and_columns() {
    let crd = bbrunner(&["crd"], "").success().stdout;
    for needle in [
        "self.scaling.min <= self.scaling.max",
        "l.matches('^[a-z0-9.]{1,50}$')",
        "self == 'auto'",
        "- rp",
        "name: Desired",
        "name: Busy",
        "status: {}",
        "name: Ready",
        "- bbrunner",
        "Bitbucket Pipelines self-hosted runners with these labels",
    ] {
        assert!(crd.contains(needle), "{needle}");
    }
    for size in ["- 1x", "- 2x", "- 4x", "- 8x"] {
        assert!(crd.contains(size), "{size}");
    }
}
