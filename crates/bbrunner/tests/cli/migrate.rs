use testbed::scratch;

use crate::util::{bbrunner, example};

#[test]
fn a_realistic_autoscaler_config_becomes_pools_that_load() {
    let config = example("atlassian-runner-config.yaml");
    let run = bbrunner(
        &["migrate", "--from-atlassian", config.to_str().unwrap()],
        "",
    )
    .success();
    assert!(run.stdout.contains("kind: RunnerPool"));
    assert!(run.stdout.contains("# percentageRunnersIdle"));
    // Its comments point at commands the user has, not at files of this repository.
    for repository_file in ["BENCHMARKS.md", "README", "deploy/", "examples/", "docs/"] {
        assert!(
            !run.stdout.contains(repository_file),
            "{repository_file} in:\n{}",
            run.stdout
        );
    }
    // And the simulate command it points at works on what it wrote.
    assert!(run.stdout.contains("bbrunner simulate --pool"));
    let scratch = scratch("migrate");
    let dir = scratch.path();
    std::fs::write(dir.join("pools.yaml"), &run.stdout).unwrap();
    bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--pool",
            dir.join("pools.yaml").to_str().unwrap(),
        ],
        "",
    )
    .success();
    std::fs::write(
        dir.join("bitbucket-pipelines.yml"),
        "pipelines:\n  default:\n    - step:\n        runs-on: [self.hosted, my.group]\n        script: [make]\n    - step:\n        runs-on: [self.hosted, big]\n        script: [make]\n",
    )
    .unwrap();
    // The migrated manifests load as RunnerPools and serve both label sets.
    let lint = bbrunner(
        &[
            "lint",
            dir.join("bitbucket-pipelines.yml").to_str().unwrap(),
            "--pools",
            dir.join("pools.yaml").to_str().unwrap(),
        ],
        "",
    )
    .success();
    assert_eq!(lint.stdout, "");
}

#[test]
fn bad_config_names_the_file_and_path() {
    let scratch = scratch("migrate-bad");
    let dir = scratch.path();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "groups:\n  - name: x\n    workspace: acme\n    parameters:\n      min: 9\n      max: 2\n",
    )
    .unwrap();
    let run = bbrunner(&["migrate", "--from-atlassian", file.to_str().unwrap()], "").failure();
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("bad.yaml: groups[0].parameters (line 5, column 7): min 9 and max 2"),
        "{}",
        run.stderr
    );
}
