use crate::util::{bbrunner, example, kubernetes_validate_strict};

fn render(extra: &[&str]) -> String {
    let path = example("docker-command.txt");
    let mut args = vec!["render", "--docker-command", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    bbrunner(&args, "").success().stdout
}

#[test]
fn render_default_snapshot() {
    insta::assert_snapshot!(render(&["--create-namespace"]));
}

#[test]
fn render_fixed_mtu_large_size_snapshot() {
    insta::assert_snapshot!(render(&[
        "--namespace",
        "ci",
        "--name",
        "build-runner",
        "--mtu",
        "1400",
        "--size",
        "4x",
        "--dind-image",
        "docker:27.5-dind",
    ]));
}

#[test]
fn every_option_combination_validates_strictly_against_kubernetes_1_33() {
    let repository_runner = std::fs::read_to_string(example("docker-command.txt"))
        .unwrap()
        .replace(
            "-e RUNTIME_PREREQUISITES_ENABLED=true",
            "-e REPOSITORY_UUID={11111111-2222-4333-8444-555555555555} -e RUNTIME_PREREQUISITES_ENABLED=true -e HTTPS_PROXY=http://proxy:3128",
        );
    let mut all = String::new();
    for (i, size) in ["1x", "2x", "4x", "8x"].iter().enumerate() {
        for mtu in ["auto", "1450", "9000"] {
            for create_namespace in [false, true] {
                let name = format!("r{i}-{mtu}-{create_namespace}");
                let namespace = format!("ns{i}");
                let mut args = vec![
                    "render",
                    "--size",
                    size,
                    "--mtu",
                    mtu,
                    "--name",
                    &name,
                    "--namespace",
                    &namespace,
                ];
                if create_namespace {
                    args.push("--create-namespace");
                }
                all.push_str(&bbrunner(&args, &repository_runner).success().stdout);
            }
        }
    }
    kubernetes_validate_strict(&all);
}

#[test]
fn render_reads_the_command_from_stdin() {
    let command = std::fs::read_to_string(example("docker-command.txt")).unwrap();
    let run = bbrunner(&["render", "--docker-command", "-"], &command).success();
    assert_eq!(run.stdout, render(&[]));
    assert!(run.stderr.contains("must allow privileged pods"));
}

#[test]
fn bad_options_name_the_flag() {
    let path = example("docker-command.txt");
    let path = path.to_str().unwrap();
    for (flag, value, expected) in [
        (
            "--mtu",
            "huge",
            "--mtu: mtu \"huge\" is neither `auto` nor a number",
        ),
        (
            "--size",
            "16x",
            "--size: size \"16x\" is not one of 1x, 2x, 4x, 8x",
        ),
        (
            "--namespace",
            "Bad",
            "namespace \"Bad\" is not a valid Kubernetes name",
        ),
    ] {
        let run = bbrunner(&["render", "--docker-command", path, flag, value], "").failure();
        assert_eq!(run.stdout, "");
        assert!(run.stderr.contains(expected), "{}", run.stderr);
    }
    let run = bbrunner(
        &[
            "render",
            "--docker-command",
            path,
            "--dind-image",
            "docker:dind",
        ],
        "",
    )
    .success();
    assert!(
        run.stderr.contains("floats to new Docker majors"),
        "{}",
        run.stderr
    );
}

/// Parity with a RunnerPool's podTemplate where users asked for it, proxies passed to dind
/// (it pulls the steps' images), and the dind 29 warning doctor gives.
#[test]
fn render_places_the_pod_mirrors_pulls_and_proxies_as_a_pool_does() {
    let command = std::fs::read_to_string(example("docker-command.txt"))
        .unwrap()
        .replace(
            "-e WORKING_DIRECTORY=/tmp",
            "-e WORKING_DIRECTORY=/tmp -e HTTPS_PROXY=http://proxy:3128",
        );
    let run = bbrunner(
        &[
            "render",
            "--node-selector",
            "pool=ci",
            "--toleration",
            "dedicated=ci:NoSchedule",
            "--image-pull-secret",
            "regcred",
            "--registry-mirror",
            "https://mirror.example",
            "--dind-image",
            "docker:29.0-dind",
        ],
        &command,
    )
    .success();
    assert!(
        run.stderr
            .contains("refuses Docker clients older than API 1.44"),
        "{}",
        run.stderr
    );
    kubernetes_validate_strict(&run.stdout);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    let pod = &docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["pool"], "ci");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["tolerations"][0]["effect"], "NoSchedule");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    let dind = &pod["initContainers"][0];
    assert!(
        dind["args"]
            .to_string()
            .contains("--registry-mirror=https://mirror.example")
    );
    assert!(
        dind["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "HTTPS_PROXY"),
        "{dind}"
    );
    let bad = bbrunner(&["render", "--toleration", "x:Sometimes"], &command).failure();
    assert!(
        bad.stderr
            .contains("NoSchedule, PreferNoSchedule or NoExecute"),
        "{}",
        bad.stderr
    );
}

/// What would make an invalid or dangerous pod is refused before anything is printed: a
/// working directory over a system directory or the Docker mounts, and selectors or
/// tolerations the API server would refuse. Nothing reaches standard output.
#[test]
fn render_refuses_mounts_and_labels_that_would_break_the_pod() {
    let command = std::fs::read_to_string(example("docker-command.txt")).unwrap();
    assert!(command.contains("WORKING_DIRECTORY=/tmp"));
    for directory in [
        "/var/run",
        "/",
        "/etc",
        "/var/lib",
        "/var/lib/docker/x",
        "/usr/",
    ] {
        let pasted = command.replace(
            "WORKING_DIRECTORY=/tmp",
            &format!("WORKING_DIRECTORY={directory}"),
        );
        let run = bbrunner(&["render"], &pasted).failure();
        assert_eq!(run.stdout, "", "{directory}");
        assert!(
            run.stderr
                .contains(&format!("WORKING_DIRECTORY {directory:?}")),
            "{directory}: {}",
            run.stderr
        );
    }
    for (flag, value, field) in [
        (
            "--node-selector",
            "bad key!=x",
            "nodeSelector key \"bad key!\"",
        ),
        (
            "--node-selector",
            "disk=fast ssd",
            "nodeSelector[disk] \"fast ssd\"",
        ),
        (
            "--toleration",
            "dedicated/=ci:NoSchedule",
            "tolerations[0].key",
        ),
        (
            "--toleration",
            "dedicated=ci runners:NoSchedule",
            "tolerations[0].value",
        ),
    ] {
        let run = bbrunner(&["render", flag, value], &command).failure();
        assert_eq!(run.stdout, "", "{value}");
        assert!(run.stderr.contains(field), "{value}: {}", run.stderr);
    }
    // Directories of their own, and well-formed labels, still render.
    let fine = command.replace("WORKING_DIRECTORY=/tmp", "WORKING_DIRECTORY=/builds/work");
    bbrunner(
        &[
            "render",
            "--node-selector",
            "kubernetes.io/arch=amd64",
            "--toleration",
            "dedicated=ci:NoSchedule",
        ],
        &fine,
    )
    .success();
}
