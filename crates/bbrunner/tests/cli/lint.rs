use std::path::PathBuf;
use std::process::Command;

use testbed::scratch;

use crate::util::{bbrunner, workspace_root};

/// A scratch folder with `pools.yaml` (POOLS) and, if given, `bitbucket-pipelines.yml`;
/// removed when dropped, also when the test fails.
struct Case {
    dir: testbed::TempDir,
    file: PathBuf,
    pools: PathBuf,
}

impl Case {
    fn new(name: &str, pipelines: Option<&str>) -> Self {
        let dir = scratch(&format!("lint-{name}"));
        let file = dir.path().join("bitbucket-pipelines.yml");
        if let Some(text) = pipelines {
            std::fs::write(&file, text).unwrap();
        }
        let pools = dir.path().join("pools.yaml");
        std::fs::write(&pools, POOLS).unwrap();
        Case { dir, file, pools }
    }
}

const POOLS: &str = "\
apiVersion: bbrunner.dev/v1alpha1
kind: RunnerPool
metadata: {name: builds, namespace: ci}
spec:
  workspace: acme
  labels: [build]
  credentials: {secretRef: {name: c}}
  dind: {mtu: 1400}
---
apiVersion: v1
kind: Secret
metadata: {name: c}
";

const PIPELINES: &str = "\
# deploys on merge
pipelines:
  default:
    - step:
        name: Build
        runs-on: [self.hosted, build]
        services: [docker]   # builds images
        script: [docker build .]
    - step:
        runs-on: [self.hosted, gpu]
        script: [train]
";

#[test]
fn text_output_names_file_line_column_code_and_help_and_fails_on_errors() {
    let case = Case::new("text", Some(PIPELINES));
    let Case { dir, file, .. } = &case;
    let run = bbrunner(
        &[
            "lint",
            file.to_str().unwrap(),
            "--pools",
            dir.path().to_str().unwrap(),
        ],
        "",
    )
    .failure();
    assert_eq!(run.status.code(), Some(1));
    let path = file.display().to_string();
    assert!(
        run.stdout
            .contains(&format!("{path}:7:19: error[docker-mtu]: ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  = help: add to the file"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("DOCKER_OPTS: \"--mtu=1400\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("{path}:10:18: error[unserved-labels]: ")),
        "{}",
        run.stdout
    );
}

#[test]
fn json_output_and_fix() {
    let case = Case::new("fix", Some(&PIPELINES.replace("gpu", "build")));
    let Case { file, pools, .. } = &case;
    let args = [
        "lint",
        file.to_str().unwrap(),
        "--pools",
        pools.to_str().unwrap(),
        "--format",
        "json",
    ];
    let run = bbrunner(&args, "").failure();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let first = &report["diagnostics"][0];
    for key in ["path", "line", "column", "severity", "code", "message"] {
        assert!(!first[key].is_null(), "{key} in {first}");
    }
    assert_eq!(first["code"], "docker-mtu");

    let mut with_fix = args.to_vec();
    with_fix.push("--fix");
    let run = bbrunner(&with_fix, "").success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["diagnostics"], serde_json::json!([]));
    let fixed = std::fs::read_to_string(file).unwrap();
    assert!(fixed.starts_with("# deploys on merge\ndefinitions:\n  services:\n    docker:\n      type: docker\n      image: ghcr.io/bbrunner/docker-service:28.5\n      variables:\n        DOCKER_OPTS: \"--mtu=1400\"\npipelines:\n"), "{fixed}");
    assert!(
        run.stderr.contains("fixed:") && run.stderr.contains("ghcr.io/bbrunner/docker-service"),
        "{}",
        run.stderr
    );
    assert!(fixed.contains("services: [docker]   # builds images"));
}

/// A file --fix must not edit (here: the user's own DOCKER_OPTS) is left byte for byte, and
/// the user is told what to add by hand.
#[test]
fn fix_leaves_a_file_it_cannot_edit_and_says_what_to_add() {
    let case = Case::new("nofix", None);
    let Case { file, pools, .. } = &case;
    let text = PIPELINES.replace("gpu", "build").replace(
        "# deploys on merge\n",
        "# deploys on merge\ndefinitions:\n  services:\n    docker:\n      variables:\n        DOCKER_OPTS: --debug\n",
    );
    std::fs::write(file, &text).unwrap();
    let run = bbrunner(
        &[
            "lint",
            file.to_str().unwrap(),
            "--pools",
            pools.to_str().unwrap(),
            "--fix",
        ],
        "",
    );
    assert!(run.stdout.contains("docker-mtu"), "{}", run.stdout);
    assert!(
        run.stderr.contains("not fixed") && run.stderr.contains("DOCKER_OPTS: \"--mtu=1400\""),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(file).unwrap(), text);
}

/// The seed's third Docker level with a stock dind image: --fix must not claim an MTU the image
/// would ignore. It refuses, leaves the file, fails and says what to add; an image the user
/// declares reads DOCKER_OPTS is fixed in place.
#[test]
fn fix_refuses_a_docker_service_image_that_ignores_docker_opts() {
    let case = Case::new("stock-dind", None);
    let Case { file, pools, .. } = &case;
    let text = PIPELINES.replace("gpu", "build").replace(
        "# deploys on merge\n",
        "# deploys on merge\ndefinitions:\n  services:\n    docker:\n      image: docker:27-dind\n",
    );
    std::fs::write(file, &text).unwrap();
    let args = [
        "lint",
        file.to_str().unwrap(),
        "--pools",
        pools.to_str().unwrap(),
        "--fix",
    ];
    let run = bbrunner(&args, "").failure();
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("fixed:")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("not fixed")
            && run
                .stderr
                .contains("docker:27-dind is not known to read DOCKER_OPTS")
            && run.stderr.contains("ghcr.io/bbrunner/docker-service")
            && run.stderr.contains("--docker-service-image"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(file).unwrap(), text);

    let mut declared = args.to_vec();
    declared.extend(["--docker-service-image", "docker:27-dind"]);
    let run = bbrunner(&declared, "").success();
    assert!(
        run.stderr.lines().any(|l| l.starts_with("fixed:")),
        "{}",
        run.stderr
    );
    let fixed: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let docker = &fixed["definitions"]["services"]["docker"];
    assert_eq!(docker["image"], "docker:27-dind", "{fixed}");
    assert_eq!(docker["variables"]["DOCKER_OPTS"], "--mtu=1400", "{fixed}");
}

#[test]
fn unreadable_or_broken_input_exits_2() {
    let run = bbrunner(&["lint", "/nonexistent/bitbucket-pipelines.yml"], "").failure();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        run.stderr
            .contains("cannot read /nonexistent/bitbucket-pipelines.yml")
    );
    let scratch = scratch("lint-broken");
    let dir = scratch.path();
    let file = dir.join("p.yml");
    std::fs::write(&file, "pipelines:\n  default: [\n").unwrap();
    let run = bbrunner(&["lint", file.to_str().unwrap()], "").failure();
    assert_eq!(run.status.code(), Some(2));
    assert!(run.stderr.contains("not YAML"), "{}", run.stderr);
    std::fs::write(
        dir.join("pools.yaml"),
        "kind: RunnerPool\nspec: {labels: [Bad]}\nmetadata: {name: x}\n",
    )
    .unwrap();
    std::fs::write(&file, "pipelines: {}\n").unwrap();
    let run = bbrunner(
        &[
            "lint",
            file.to_str().unwrap(),
            "--pools",
            dir.join("pools.yaml").to_str().unwrap(),
        ],
        "",
    )
    .failure();
    assert_eq!(run.status.code(), Some(2));
}

/// On every real-world file: no panic, and our schema verdict (any `schema` error or none)
/// agrees with check-jsonschema's vendored Bitbucket schema.
#[test]
fn corpus_schema_verdicts_agree_with_check_jsonschema() {
    // A copy of the workplace's ../shared/corpus/pipelines, so that CI needs nothing outside
    // the repository.
    let corpus = workspace_root().join("crates/bbrunner/tests/corpus/pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("the corpus at {} is missing: {e}", corpus.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus too small: {}", files.len());
    let mut disagreements = Vec::new();
    for file in &files {
        let ours = bbrunner(&["lint", file.to_str().unwrap(), "--format", "json"], "");
        assert!(
            matches!(ours.status.code(), Some(0 | 1)),
            "{}: exit {:?}\n{}",
            file.display(),
            ours.status.code(),
            ours.stderr
        );
        let report: serde_json::Value = serde_json::from_str(&ours.stdout).unwrap();
        let we_fail = report["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "schema");
        let theirs = Command::new("check-jsonschema")
            .args([
                "--builtin-schema",
                "vendor.bitbucket-pipelines",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "check-jsonschema is not installed ({e}); the README's test command installs it"
                )
            });
        let they_fail = !theirs.status.success();
        if we_fail != they_fail {
            disagreements.push(format!(
                "{}: ours {we_fail}, check-jsonschema {they_fail}",
                file.display()
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// `--fix` on standard input (a pipe) used to write into its own input: it now refuses
/// anything that is not a regular file, as trouble (exit 2), and claims nothing.
#[test]
fn fix_refuses_what_is_not_a_regular_file() {
    let case = Case::new("fix-stdin", None);
    let Case { dir, pools, .. } = &case;
    let run = bbrunner(
        &[
            "lint",
            "/dev/stdin",
            "--pools",
            pools.to_str().unwrap(),
            "--fix",
        ],
        &PIPELINES.replace("gpu", "build"),
    );
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("regular file"), "{}", run.stderr);
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("fixed:")),
        "{}",
        run.stderr
    );
    let run = bbrunner(&["lint", dir.path().to_str().unwrap(), "--fix"], "");
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
}

#[test]
fn pools_that_hold_no_pool_are_warned_about() {
    let scratch = scratch("lint-no-pools");
    let dir = scratch.path();
    let file = dir.join("bitbucket-pipelines.yml");
    std::fs::write(&file, "pipelines: {}\n").unwrap();
    std::fs::write(
        dir.join("other.yaml"),
        "kind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap();
    let run = bbrunner(
        &[
            "lint",
            file.to_str().unwrap(),
            "--pools",
            dir.join("other.yaml").to_str().unwrap(),
        ],
        "",
    )
    .success();
    assert!(
        run.stderr.contains("warning: no RunnerPool in"),
        "{}",
        run.stderr
    );
}

/// The examples the README points newcomers at stay true: the pipelines file passes against
/// the pools, and the same file without its docker service fix is the README's finding.
#[test]
fn the_examples_lint_clean_and_the_readme_s_finding_is_real() {
    let pipelines = crate::util::example("bitbucket-pipelines.yml");
    let pools = crate::util::example("pools.yaml");
    let run = bbrunner(
        &[
            "lint",
            pipelines.to_str().unwrap(),
            "--pools",
            pools.to_str().unwrap(),
        ],
        "",
    )
    .success();
    assert_eq!(run.stdout, "", "{}", run.stdout);
    let text = std::fs::read_to_string(&pipelines).unwrap();
    let start = text.find("      type: docker").unwrap();
    let end = text.find("pipelines:").unwrap();
    let unfixed = format!("{}\n{}", &text[..start], &text[end..]);
    let scratch = scratch("example");
    let dir = scratch.path();
    let file = dir.join("bitbucket-pipelines.yml");
    std::fs::write(&file, unfixed).unwrap();
    let run = bbrunner(
        &[
            "lint",
            file.to_str().unwrap(),
            "--pools",
            pools.to_str().unwrap(),
        ],
        "",
    )
    .failure();
    assert!(
        run.stdout.contains("error[docker-mtu]") && run.stdout.contains("MTU is 1400"),
        "{}",
        run.stdout
    );
    bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--pool",
            pools.to_str().unwrap(),
        ],
        "",
    )
    .success();
}

/// `--fix --check` and `--fix --diff` write nothing: the first fails as CI wants, the second
/// prints the fix as a unified diff of exactly what `--fix` then writes.
#[test]
fn fix_check_and_diff_leave_the_file_and_show_the_fix() {
    let case = Case::new("fix-check", Some(&PIPELINES.replace("gpu", "build")));
    let Case { file, pools, .. } = &case;
    let base = [
        "lint",
        file.to_str().unwrap(),
        "--pools",
        pools.to_str().unwrap(),
        "--fix",
    ];
    let before = std::fs::read_to_string(file).unwrap();
    let mut check = base.to_vec();
    check.push("--check");
    let run = bbrunner(&check, "").failure();
    assert!(run.stdout.contains("error[docker-mtu]"), "{}", run.stdout);
    assert!(run.stderr.contains("needs the fix"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(file).unwrap(), before);

    let mut diff = base.to_vec();
    diff.push("--diff");
    let run = bbrunner(&diff, "").failure();
    assert!(run.stdout.starts_with("--- a/"), "{}", run.stdout);
    assert!(
        run.stdout.contains("+        DOCKER_OPTS: \"--mtu=1400\""),
        "{}",
        run.stdout
    );
    assert_eq!(std::fs::read_to_string(file).unwrap(), before);
    bbrunner(&base, "").success();
    let after = std::fs::read_to_string(file).unwrap();
    // The fix only inserts: the diff removes nothing and adds exactly the new lines.
    let added: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .map(|l| &l[1..])
        .collect();
    assert!(
        !run.stdout
            .lines()
            .any(|l| l.starts_with('-') && !l.starts_with("---")),
        "{}",
        run.stdout
    );
    assert_eq!(added.len(), after.lines().count() - before.lines().count());
    assert!(added.iter().all(|line| after.lines().any(|l| l == *line)));
    // --check and --diff mean nothing without --fix.
    let run = bbrunner(&["lint", file.to_str().unwrap(), "--check"], "").failure();
    assert!(run.stderr.contains("--fix"), "{}", run.stderr);
}

/// For a pool on `mtu: auto`, lint says why it suggests what it suggests, and with the MTU
/// `bbrunner doctor` measured (`--pod-mtu`) it judges and fixes with that one.
#[test]
fn an_auto_pool_s_mtu_is_explained_and_the_measured_one_is_used() {
    let case = Case::new("auto-mtu", Some(&PIPELINES.replace("gpu", "build")));
    let Case { file, pools, .. } = &case;
    std::fs::write(
        pools,
        POOLS.replace("dind: {mtu: 1400}", "dind: {mtu: auto}"),
    )
    .unwrap();
    let args = [
        "lint",
        file.to_str().unwrap(),
        "--pools",
        pools.to_str().unwrap(),
    ];
    let run = bbrunner(&args, "").success();
    assert!(
        run.stdout.contains("warning[docker-mtu]")
            && run.stdout.contains("lint cannot see it")
            && run.stdout.contains("--pod-mtu")
            && run.stdout.contains("--mtu=1300"),
        "{}",
        run.stdout
    );
    let mut measured = args.to_vec();
    measured.extend(["--pod-mtu", "1450"]);
    let run = bbrunner(&measured, "").failure();
    assert!(
        run.stdout.contains("error[docker-mtu]") && run.stdout.contains("--mtu=1450"),
        "{}",
        run.stdout
    );
    measured.push("--fix");
    bbrunner(&measured, "").success();
    assert!(
        std::fs::read_to_string(file)
            .unwrap()
            .contains("--mtu=1450")
    );
    // A pod network of 1500 or more needs nothing.
    let case = Case::new("auto-mtu-1500", Some(&PIPELINES.replace("gpu", "build")));
    std::fs::write(
        &case.pools,
        POOLS.replace("dind: {mtu: 1400}", "dind: {mtu: auto}"),
    )
    .unwrap();
    let run = bbrunner(
        &[
            "lint",
            case.file.to_str().unwrap(),
            "--pools",
            case.pools.to_str().unwrap(),
            "--pod-mtu",
            "1500",
        ],
        "",
    )
    .success();
    assert!(!run.stdout.contains("docker-mtu"), "{}", run.stdout);
}

/// A long-string alias bomb in a `--pools` file or in the pipelines file is refused with
/// exit 2 and a message that says so, never expanded.
#[test]
fn yaml_bombs_are_refused_in_the_pools_and_the_pipelines() {
    let mut bomb = format!("a: &a \"{}\"\n", "x".repeat(10_000));
    for (name, of) in [("b", "a"), ("c", "b"), ("d", "c")] {
        let refs = vec![format!("*{of}"); 30].join(", ");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let case = Case::new("bombs", Some(PIPELINES));
    std::fs::write(&case.pools, &bomb).unwrap();
    let run = bbrunner(
        &[
            "lint",
            case.file.to_str().unwrap(),
            "--pools",
            case.pools.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("budget breached"), "{}", run.stderr);

    std::fs::write(&case.file, &bomb).unwrap();
    let run = bbrunner(&["lint", case.file.to_str().unwrap()], "");
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("YAML bomb"), "{}", run.stderr);
    // Refused within 512 MB of address space (util-linux's prlimit; expanded, the bomb
    // would take gigabytes).
    let capped = std::process::Command::new("prlimit")
        .arg("--as=536870912")
        .arg(env!("CARGO_BIN_EXE_bbrunner"))
        .args(["lint", case.file.to_str().unwrap()])
        .output()
        .expect("prlimit (util-linux) runs");
    let stderr = String::from_utf8_lossy(&capped.stderr);
    assert_eq!(capped.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("YAML bomb"), "{stderr}");
}

/// examples/cached-pool.yaml is one repository's pool: no warning. The same pool serving the
/// whole workspace shares its cache across repositories, and lint says so at the step.
#[test]
fn a_cached_pool_shared_by_the_workspace_is_warned_about() {
    let pipelines = crate::util::example("bitbucket-pipelines.yml");
    let cached = crate::util::example("cached-pool.yaml");
    let lint_with = |pools: &std::path::Path| {
        bbrunner(
            &[
                "lint",
                pipelines.to_str().unwrap(),
                "--pools",
                pools.to_str().unwrap(),
            ],
            "",
        )
    };
    assert_eq!(lint_with(&cached).success().stdout, "");
    let scratch = scratch("shared-cache");
    let dir = scratch.path();
    let workspace_pool = dir.join("pool.yaml");
    let text = std::fs::read_to_string(&cached).unwrap();
    std::fs::write(&workspace_pool, text.replace("  repository: app\n", "")).unwrap();
    let run = lint_with(&workspace_pool).success();
    assert!(
        run.stdout
            .contains("warning[shared-cache]: pool app-builds serves this step")
            && run.stdout.contains("every repository of workspace acme"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches("warning[shared-cache]").count(),
        1,
        "one note per pool:\n{}",
        run.stdout
    );
    // simulate reads its cache: the volumes it keeps show beside the cold starts.
    let sim = bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--cold-start",
            "90s",
            "--pool",
            cached.to_str().unwrap(),
        ],
        "",
    )
    .success();
    assert!(sim.stdout.lines().next().unwrap().ends_with("cold volumes"));
}
