use super::*;

fn pool(name: &str, labels: &[&str], size: RunnerSize, mtu: Mtu) -> LintPool {
    LintPool {
        name: name.into(),
        labels: Labels::new(labels).unwrap(),
        size,
        mtu,
        dind_image: crate::manifests::DEFAULT_DIND_IMAGE.into(),
        shared_cache: None,
    }
}

/// Lint with only bbrunner's own docker service image known to read DOCKER_OPTS.
fn lint(text: &str, pools: &[LintPool]) -> Result<Vec<Diagnostic>, yaml::YamlError> {
    super::lint(text, pools, &DockerServiceImages::default())
}

fn fix(text: &str, mtu: u16) -> Result<String, NotFixed> {
    fix_docker_mtu(text, mtu, &DockerServiceImages::default())
}

fn codes(diags: &[Diagnostic]) -> Vec<(&'static str, usize, usize)> {
    diags.iter().map(|d| (d.code, d.line, d.column)).collect()
}

const CLEAN: &str = "\
image: node:20
pipelines:
  default:
    - step:
        name: Test
        runs-on: [self.hosted, linux, build]
        script:
          - npm test
";

#[test]
fn a_clean_file_is_quiet() {
    let pools = [pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1500))];
    assert_eq!(lint(CLEAN, &pools).unwrap(), vec![]);
}

#[test]
fn schema_violations_point_at_the_node_or_key() {
    let text = "pipelines:\n  default:\n    - step:\n        script: [make]\n        max-time: fast\n        colour: blue\n";
    let d = lint(text, &[]).unwrap();
    let schema: Vec<_> = d.iter().filter(|d| d.code == "schema").collect();
    assert!(!schema.is_empty(), "{d:?}");
    assert!(
        schema.iter().any(|d| d.line == 5 || d.line == 6),
        "{schema:?}"
    );
}

#[test]
fn label_rules() {
    let text = "\
pipelines:
  default:
    - step:
        runs-on: [self.hosted, Build_Box]
        script: [make]
    - step:
        runs-on: [self.hosted, a, b, c, d, e, f, g, h, i]
        script: [make]
    - step:
        runs-on: [gpu]
        script: [make]
";
    let d = codes(&lint(text, &[]).unwrap());
    assert!(d.contains(&("invalid-label", 4, 32)), "{d:?}");
    assert!(d.contains(&("too-many-labels", 7, 18)), "{d:?}");
    assert!(d.contains(&("missing-self-hosted", 10, 18)), "{d:?}");
}

#[test]
fn pool_rules_unserved_labels_and_size() {
    let text = "\
pipelines:
  default:
    - step:
        runs-on: [self.hosted, gpu]
        script: [train]
    - step:
        runs-on: [self.hosted, build]
        size: 4x
        script: [make]
    - step:
        runs-on: [self.hosted, build]
        size: 16x
        script: [make]
";
    let pools = [pool("builds", &["build"], RunnerSize::X2, Mtu::Fixed(1500))];
    let diags = lint(text, &pools).unwrap();
    let d = codes(&diags);
    assert!(d.contains(&("unserved-labels", 4, 18)), "{d:?}");
    assert!(d.contains(&("size-exceeds-pool", 8, 15)), "{d:?}");
    assert!(d.contains(&("size-unsupported", 12, 15)), "{d:?}");
    let unserved = diags.iter().find(|d| d.code == "unserved-labels").unwrap();
    assert!(
        unserved.message.contains("closest pool builds lacks gpu"),
        "{}",
        unserved.message
    );
}

#[test]
fn services_memory_unknown_and_max_time() {
    let text = "\
definitions:
  services:
    db:
      image: postgres:16
      memory: 2048
    cache:
      image: redis
      memory: 1536
pipelines:
  default:
    - step:
        runs-on: [self.hosted, build]
        max-time: 240
        services: [db, cache, search]
        script: [make]
";
    let d = codes(&lint(text, &[]).unwrap());
    assert!(d.contains(&("service-memory", 14, 19)), "{d:?}");
    assert!(d.contains(&("unknown-service", 14, 31)), "{d:?}");
    assert!(d.contains(&("max-time", 13, 19)), "{d:?}");
}

#[test]
fn docker_mtu_warns_on_auto_errors_on_small_and_is_quiet_when_passed() {
    let text = "\
pipelines:
  default:
    - step:
        runs-on: [self.hosted, build]
        services: [docker]
        script: [docker build .]
";
    let auto = lint(
        text,
        &[pool("builds", &["build"], RunnerSize::X1, Mtu::Auto)],
    )
    .unwrap();
    let d = auto.iter().find(|d| d.code == "docker-mtu").unwrap();
    assert_eq!((d.severity, d.line, d.column), (Severity::Warning, 5, 19));
    assert!(
        d.help
            .as_ref()
            .unwrap()
            .contains("DOCKER_OPTS: \"--mtu=1300\"")
    );
    let small = lint(
        text,
        &[pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1400))],
    )
    .unwrap();
    let d = small.iter().find(|d| d.code == "docker-mtu").unwrap();
    assert_eq!(d.severity, Severity::Error);
    assert!(d.help.as_ref().unwrap().contains("--mtu=1400"));
    let big = lint(
        text,
        &[pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1500))],
    )
    .unwrap();
    assert!(!big.iter().any(|d| d.code == "docker-mtu"));

    let fixed = fix(text, 1400).unwrap();
    let after = lint(
        &fixed,
        &[pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1400))],
    )
    .unwrap();
    assert!(
        !after.iter().any(|d| d.code == "docker-mtu"),
        "{after:?}\n{fixed}"
    );
    assert!(
        fixed.ends_with(text),
        "the rest of the file is untouched:\n{fixed}"
    );
}

/// Found by `lint_and_fix_never_panic`: a document that is not a mapping, or a `definitions`
/// or `services` that is a scalar, has nowhere to take the block without replacing a value.
#[test]
fn fix_leaves_documents_it_cannot_extend_alone() {
    for text in [
        "16x\n",
        "- a\n- b\n",
        "definitions: 16x\npipelines:\n  default: []\n",
        "definitions:\n  services: none\npipelines:\n  default: []\n",
        "definitions:\n  services:\n    docker:\n      variables: x\n",
        // Flow style.
        "definitions: {services: {docker: {memory: 2048}}}\npipelines:\n  default: []\n",
    ] {
        assert_eq!(fix(text, 1400), Err(NotFixed::Layout), "{text:?}");
    }
    // The user's own DOCKER_OPTS stays theirs.
    assert_eq!(
        fix(
            "definitions:\n  services:\n    docker:\n      variables:\n        DOCKER_OPTS: --debug\n",
            1400
        ),
        Err(NotFixed::DockerOptsSet)
    );
}

#[test]
fn fix_keeps_comments_and_extends_existing_definitions() {
    let text = "\
# CI for the app
definitions:
  services:   # our services
    db:
      image: postgres:16
pipelines:
  default:
    - step:
        runs-on: [self.hosted]   # any runner
        services: [docker, db]
        script: [make]
";
    let fixed = fix(text, 1300).unwrap();
    assert_eq!(
        fixed,
        text.replace("  services:   # our services\n", &format!("  services:   # our services\n    docker:\n      type: docker\n      image: {DOCKER_SERVICE_IMAGE}\n      variables:\n        DOCKER_OPTS: \"--mtu=1300\"\n"))
    );
    let any_pool = [pool("any", &[], RunnerSize::X1, Mtu::Auto)];
    assert!(
        lint(text, &any_pool)
            .unwrap()
            .iter()
            .any(|d| d.code == "docker-mtu")
    );
    assert!(
        !lint(&fixed, &any_pool)
            .unwrap()
            .iter()
            .any(|d| d.code == "docker-mtu" || d.code == "schema")
    );
    // Already passing an MTU: nothing to do.
    assert_eq!(fix(&fixed, 1300), Err(NotFixed::DockerOptsSet));

    let with_docker = "definitions:\n  services:\n    docker:\n      memory: 2048\npipelines:\n  default:\n    - step:\n        services: [docker]\n        script: [make]\n";
    let fixed = fix(with_docker, 1300).unwrap();
    assert!(fixed.contains(&format!("    docker:\n      type: docker\n      image: {DOCKER_SERVICE_IMAGE}\n      variables:\n        DOCKER_OPTS: \"--mtu=1300\"\n      memory: 2048\n")), "{fixed}");
}

#[test]
fn a_stock_dind_image_ignores_docker_opts() {
    let text = "\
definitions:
  services:
    docker:
      image: docker:27-dind
      variables:
        DOCKER_OPTS: --mtu=1300
pipelines:
  default:
    - step:
        runs-on: [self.hosted]
        services: [docker]
        script: [make]
";
    let d = codes(&lint(text, &[]).unwrap());
    assert!(d.contains(&("docker-opts-ignored", 4, 14)), "{d:?}");
    // Without pools there is no serving pool whose MTU could be known: no docker-mtu.
    let quiet = "pipelines:\n  default:\n    - step:\n        runs-on: [self.hosted]\n        services: [docker]\n        script: [make]\n";
    assert!(
        !lint(quiet, &[])
            .unwrap()
            .iter()
            .any(|d| d.code == "docker-mtu")
    );
}

#[test]
fn syntax_errors_are_errors_not_panics() {
    assert!(lint("pipelines: [\n", &[]).is_err());
    assert!(lint("", &[]).is_ok());
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// YAML-ish text built from pipelines vocabulary, so that inputs reach the rules.
    fn pipelines_like() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            Just("pipelines:"),
            Just("default:"),
            Just("- step:"),
            Just("runs-on:"),
            Just("[self.hosted, build]"),
            Just("services:"),
            Just("[docker]"),
            Just("size:"),
            Just("16x"),
            Just("max-time:"),
            Just("999"),
            Just("definitions:"),
            Just("docker:"),
            Just("&a"),
            Just("*a"),
            Just("<<:"),
            Just("\"x\""),
            Just("{"),
            Just("]"),
            Just("script:"),
            Just("- make"),
            Just("variables:"),
            Just("DOCKER_OPTS: --mtu=1"),
            Just("#"),
            Just("~"),
        ];
        proptest::collection::vec((0usize..8, word), 0..40).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(indent, w)| format!("{}{w}\n", " ".repeat(indent * 2)))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn lint_and_fix_never_panic(text in pipelines_like(), mtu in 576u16..9216) {
            let pools = [pool("p", &["build"], RunnerSize::X2, Mtu::Fixed(1400))];
            if let Ok(diags) = lint(&text, &pools) {
                for d in diags {
                    prop_assert!(d.line >= 1 && d.column >= 1);
                }
            }
            if let Ok(fixed) = fix(&text, mtu) {
                prop_assert!(yaml::load(&fixed).is_ok(), "the fix broke the YAML:\n{fixed}");
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(text in "\\PC{0,300}") {
            let _ = lint(&text, &[]);
        }
    }
}

#[test]
fn nested_mtu_is_the_smallest_fixed_pool_mtu_else_the_safe_default() {
    let fixed = |mtu| pool("p", &["build"], RunnerSize::X1, Mtu::Fixed(mtu));
    let auto = pool("a", &["build"], RunnerSize::X1, Mtu::Auto);
    assert_eq!(nested_mtu(&[fixed(1450), auto.clone(), fixed(1400)]), 1400);
    assert_eq!(nested_mtu(&[auto, fixed(1500)]), SAFE_NESTED_MTU);
}

#[test]
fn fix_writes_only_the_levels_that_are_missing() {
    let tail =
        "pipelines:\n  default:\n    - step:\n        services: [docker]\n        script: [make]\n";
    let image = DOCKER_SERVICE_IMAGE;
    let cases = [
        (
            "definitions:\n  services:\n    docker:\n      variables:\n        A: b\n".to_owned(),
            format!("definitions:\n  services:\n    docker:\n      type: docker\n      image: {image}\n      variables:\n        DOCKER_OPTS: \"--mtu=1300\"\n        A: b\n"),
        ),
        (
            "definitions:\n  caches:\n    x: y\n".to_owned(),
            format!("definitions:\n  services:\n    docker:\n      type: docker\n      image: {image}\n      variables:\n        DOCKER_OPTS: \"--mtu=1300\"\n  caches:\n    x: y\n"),
        ),
        (
            String::new(),
            format!("definitions:\n  services:\n    docker:\n      type: docker\n      image: {image}\n      variables:\n        DOCKER_OPTS: \"--mtu=1300\"\n"),
        ),
        // Four-space indentation is followed.
        (
            "definitions:\n    services:\n        db:\n            image: postgres\n".to_owned(),
            format!("definitions:\n    services:\n        docker:\n          type: docker\n          image: {image}\n          variables:\n            DOCKER_OPTS: \"--mtu=1300\"\n        db:\n            image: postgres\n"),
        ),
        // An image known to read DOCKER_OPTS is kept; only the variable is added.
        (
            format!("definitions:\n  services:\n    docker:\n      type: docker\n      image: {image}\n"),
            format!("definitions:\n  services:\n    docker:\n      variables:\n        DOCKER_OPTS: \"--mtu=1300\"\n      type: docker\n      image: {image}\n"),
        ),
        // DOCKER_OPTS with an MTU but no image that reads it: the image is added.
        (
            "definitions:\n  services:\n    docker:\n      variables:\n        DOCKER_OPTS: --mtu=1200\n".to_owned(),
            format!("definitions:\n  services:\n    docker:\n      type: docker\n      image: {image}\n      variables:\n        DOCKER_OPTS: --mtu=1200\n"),
        ),
    ];
    for (head, fixed_head) in cases {
        let text = format!("{head}{tail}");
        assert_eq!(
            fix(&text, 1300),
            Ok(format!("{fixed_head}{tail}")),
            "{text:?}"
        );
    }
}

#[test]
fn fix_never_claims_what_an_image_would_ignore() {
    let text = "definitions:\n  services:\n    docker:\n      image: docker:27-dind\npipelines:\n  default:\n    - step:\n        services: [docker]\n        script: [make]\n";
    assert_eq!(
        fix(text, 1300),
        Err(NotFixed::ImageIgnoresDockerOpts("docker:27-dind".into()))
    );
    // Unless the user declares that image reads DOCKER_OPTS.
    let declared = DockerServiceImages::with_declared(&["docker:27-dind".into()]);
    let fixed = fix_docker_mtu(text, 1300, &declared).unwrap();
    assert!(fixed.contains("DOCKER_OPTS: \"--mtu=1300\""), "{fixed}");
    assert!(!fixed.contains(DOCKER_SERVICE_IMAGE));
    // The image written is the first declared one.
    let mine = DockerServiceImages::with_declared(&["registry.example:5000/ci/dind-mtu:1".into()]);
    assert_eq!(mine.preferred(), "registry.example:5000/ci/dind-mtu:1");
    assert!(mine.read_docker_opts("registry.example:5000/ci/dind-mtu:2"));
    assert!(mine.read_docker_opts(DOCKER_SERVICE_IMAGE));
    assert!(!mine.read_docker_opts("registry.example:5000/ci/other:1"));
}

#[test]
fn a_dind_before_docker_24_is_noted_once_for_the_steps_it_serves() {
    let text = "pipelines:\n  default:\n    - step:\n        runs-on: [self.hosted, build]\n        script: [make]\n    - step:\n        runs-on: [self.hosted, build]\n        script: [make]\n";
    let mut old = pool("old", &["build"], RunnerSize::X1, Mtu::Auto);
    old.dind_image = "docker:20.10.7-dind".into();
    let d = lint(text, &[old]).unwrap();
    let notes: Vec<&Diagnostic> = d.iter().filter(|d| d.code == "step-network-mtu").collect();
    assert_eq!(notes.len(), 1, "{d:?}");
    assert_eq!(notes[0].severity, Severity::Warning);
    assert!(
        notes[0].message.contains("pool old"),
        "{}",
        notes[0].message
    );
    let current = pool("new", &["build"], RunnerSize::X1, Mtu::Auto);
    assert!(
        !lint(text, &[current])
            .unwrap()
            .iter()
            .any(|d| d.code == "step-network-mtu")
    );
}

#[test]
fn a_cache_shared_with_other_repositories_is_noted_once_at_the_first_step_it_serves() {
    let text = "pipelines:\n  default:\n    - step:\n        runs-on: [self.hosted, build]\n        script: [make]\n    - step:\n        runs-on: [self.hosted, build]\n        script: [make]\n";
    let mut shared = pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1500));
    shared.shared_cache = Some("acme".into());
    let d = lint(text, &[shared]).unwrap();
    assert_eq!(codes(&d), [("shared-cache", 4, 18)], "{d:?}");
    assert_eq!(d[0].severity, Severity::Warning);
    assert!(
        d[0].message.contains("pool builds") && d[0].message.contains("workspace acme"),
        "{}",
        d[0].message
    );
    assert!(d[0].help.as_deref().unwrap().contains("spec.repository"));
    // A repository's own cached pool, or a pool without a cache, is no one else's.
    let own = pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1500));
    assert_eq!(lint(text, &[own]).unwrap(), vec![]);
}

#[test]
fn a_yaml_bomb_is_refused_without_expanding_it() {
    // "Billion laughs": each level repeats the previous nine times.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut previous = "a";
    for name in names {
        let refs = vec![format!("*{previous}"); 9].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        previous = name;
    }
    bomb.push_str("pipelines:\n  default:\n    - step:\n        script: [*i]\n");
    let err = lint(&bomb, &[]).unwrap_err();
    assert!(err.message.contains("YAML bomb"), "{err:?}");
    // Aliases a real file uses are fine.
    let anchors = "definitions:\n  steps:\n    - step: &build\n        script: [make]\npipelines:\n  default:\n    - step: *build\n    - step: *build\n";
    assert!(lint(anchors, &[]).is_ok());
}

#[test]
fn keys_one_edit_from_a_known_key_are_warned_about() {
    let text = "pipelines:\n  defualt:\n    - step:\n        runs_on: [self.hosted, build]\n        sise: 2x\n        script: [make]\n  branches:\n    mian:\n      - step:\n          script: [make]\ndefinitions:\n  scripts: [a]\n  caches:\n    node: ~/.npm\n";
    let d = lint(text, &[]).unwrap();
    let typos: Vec<(&str, usize, usize)> = codes(&d)
        .into_iter()
        .filter(|(c, _, _)| *c == "unknown-key")
        .collect();
    assert_eq!(
        typos,
        [
            ("unknown-key", 2, 3),
            ("unknown-key", 4, 9),
            ("unknown-key", 5, 9)
        ],
        "{d:?}"
    );
    let runs_on = d.iter().find(|d| d.line == 4).unwrap();
    assert!(
        runs_on.message.contains("Bitbucket's cloud"),
        "{}",
        runs_on.message
    );
    assert_eq!(edit_distance("defualt", "default"), 1);
    assert_eq!(edit_distance("runs_on", "runs-on"), 1);
    assert_eq!(edit_distance("size", "sized"), 1);
    assert_eq!(edit_distance("step", "steps"), 1);
}

#[test]
fn a_public_image_that_reads_docker_opts_with_a_fitting_mtu_is_quiet() {
    // The seed's own fix for the third Docker level.
    let text = "\
definitions:
  services:
    docker:
      type: docker
      image: rewardenv/docker:20.10.7-dind
      variables:
        DOCKER_OPTS: \"--mtu=1300\"
pipelines:
  default:
    - step:
        runs-on: [self.hosted, linux, build]
        services: [docker]
        script: [docker build .]
";
    for mtu in [Mtu::Fixed(1400), Mtu::Fixed(1300), Mtu::Auto] {
        let pools = [pool("builds", &["build"], RunnerSize::X1, mtu)];
        let diags = lint(text, &pools).unwrap();
        assert!(
            !diags
                .iter()
                .any(|d| d.code == "docker-opts-ignored" || d.code == "docker-mtu"),
            "{mtu:?}: {diags:?}"
        );
    }
    // The same MTU is too big for a pool at 1200: said, as an error.
    let pools = [pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1200))];
    let diags = lint(text, &pools).unwrap();
    assert!(diags.iter().any(|d| d.code == "docker-mtu"), "{diags:?}");
    // Written with Docker Hub's full name, or `--mtu N`: the same.
    let full = text
        .replace("rewardenv/docker", "docker.io/rewardenv/docker")
        .replace("--mtu=1300", "--mtu 1300");
    let pools = [pool("builds", &["build"], RunnerSize::X1, Mtu::Fixed(1400))];
    assert!(
        !lint(&full, &pools)
            .unwrap()
            .iter()
            .any(|d| d.code.starts_with("docker"))
    );
    // Stock docker:dind still ignores DOCKER_OPTS.
    let stock = text.replace("rewardenv/docker:20.10.7-dind", "docker:20.10.7-dind");
    let diags = lint(&stock, &pools).unwrap();
    assert!(
        diags.iter().any(|d| d.code == "docker-opts-ignored"),
        "{diags:?}"
    );
    assert!(diags.iter().any(|d| d.code == "docker-mtu"), "{diags:?}");
}
