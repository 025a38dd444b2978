use testbed::scratch;

use crate::util::{bbrunner, example};

const SECRET: &str = "ATOA-example_secret.not-real_0123456789";

fn ui_command() -> String {
    std::fs::read_to_string(example("docker-command.txt")).unwrap()
}

#[test]
fn import_prints_the_registration_with_the_secret_redacted() {
    let run = bbrunner(&["import"], &ui_command()).success();
    insta::assert_snapshot!(run.stdout);
    assert!(!run.stdout.contains(SECRET));
}

#[test]
fn import_reads_a_file_and_reveals_on_request() {
    let path = example("docker-command.txt");
    let run = bbrunner(&["import", path.to_str().unwrap(), "--reveal-secret"], "").success();
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["oauth_client_secret"], SECRET);
}

#[test]
fn import_yaml_has_the_same_keys() {
    let run = bbrunner(&["import", "-", "--format", "yaml"], &ui_command()).success();
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn bad_input_fails_with_nothing_on_stdout_and_no_secret_anywhere() {
    let cases = [
        (
            ui_command().replace("-e RUNNER_UUID", "-e NOT_RUNNER"),
            "RUNNER_UUID is missing",
        ),
        (
            ui_command().replace("{5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f}", SECRET),
            "RUNNER_UUID is not a UUID",
        ),
        (
            ui_command().replace("-e OAUTH_CLIENT_SECRET=", "-e 'OAUTH_CLIENT_SECRET="),
            "unterminated ' quote opened at line 7, column 6",
        ),
        ("echo hello".to_owned(), "no `docker run`"),
    ];
    for (input, expected) in cases {
        let run = bbrunner(&["import", "--reveal-secret"], &input).failure();
        assert_eq!(run.stdout, "", "{expected}");
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
        assert!(!run.stderr.contains(SECRET), "{}", run.stderr);
    }
}

#[test]
fn missing_file_is_named() {
    let run = bbrunner(&["import", "/nonexistent/cmd.txt"], "").failure();
    assert!(
        run.stderr.contains("cannot read /nonexistent/cmd.txt"),
        "{}",
        run.stderr
    );
}

/// A missing kubeconfig is said once, its path not double-quoted (kube's own error repeats
/// itself three times through its cause chain).
#[test]
fn a_missing_kubeconfig_is_said_once() {
    let scratch = scratch("kc");
    let pipelines = scratch.path().join("bitbucket-pipelines.yml");
    std::fs::write(&pipelines, "pipelines: {}\n").unwrap();
    let lint = ["lint", "--from-cluster", pipelines.to_str().unwrap()];
    for args in [&["doctor"][..], &lint] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bbrunner"))
            .args(args)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(
            stderr.matches("/nonexistent/kubeconfig").count(),
            1,
            "{stderr}"
        );
        assert!(!stderr.contains("\"/nonexistent"), "{stderr}");
    }
}

#[test]
fn completion_scripts_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = crate::util::bbrunner(&["completion", shell], "")
            .success()
            .stdout;
        for sub in [
            "import", "render", "operator", "lint", "doctor", "simulate", "demo",
        ] {
            assert!(out.contains(sub), "{shell}: {sub} missing");
        }
    }
    let bad = crate::util::bbrunner(&["completion", "tcsh"], "").failure();
    assert!(bad.stderr.contains("possible values"), "{}", bad.stderr);
}

/// A ready Secret for a static pool, from the pasted command: valid, with the keys a static
/// pool reads, and only on explicit request since it holds the OAuth secret.
#[test]
fn import_prints_a_secret_for_a_static_pool() {
    let command = std::fs::read_to_string(crate::util::example("docker-command.txt")).unwrap();
    let refused = crate::util::bbrunner(&["import", "--format", "secret"], &command).failure();
    assert!(refused.stdout.is_empty());
    assert!(
        refused.stderr.contains("--reveal-secret"),
        "{}",
        refused.stderr
    );
    let out = crate::util::bbrunner(
        &["import", "--format", "secret", "--reveal-secret"],
        &command,
    )
    .success()
    .stdout;
    crate::util::kubernetes_validate_strict(&out);
    let secret: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
    for key in [
        "account_uuid",
        "runner_uuid",
        "oauth_client_id",
        "oauth_client_secret",
    ] {
        assert!(secret["stringData"][key].is_string(), "{key} in {out}");
    }
    assert_eq!(secret["kind"], "Secret");
}
