//! docs/getting-started.md, run: every `sh` block's commands and every `yaml` block (applied
//! with kubectl) in order, against fake-kube and fake-bitbucket, each of which must succeed.
//! What the page leaves to the reader is given here: the pasted command (`pbpaste` prints
//! examples/docker-command.txt), the consumer's key and secret, a pipelines file in the working
//! directory, and the Bitbucket URLs (the fakes'). The operator Deployment's pods run no process
//! in fake-kube, so the test starts the operator as they would, once `install` is applied.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_bitbucket::FakeConfig;
use testbed::scratch;

use crate::util::*;

/// The page's runnable blocks, in order: (language, text).
fn blocks(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in page.lines() {
        let trimmed = line.trim_start();
        if let Some(fence) = trimmed.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => current = Some((fence.trim().to_owned(), String::new())),
            }
            continue;
        }
        if let Some((_, text)) = current.as_mut() {
            // The page indents blocks inside list items.
            text.push_str(line.strip_prefix("   ").unwrap_or(line));
            text.push('\n');
        }
    }
    out.into_iter()
        .filter(|(lang, _)| lang == "sh" || lang == "yaml")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn getting_started_runs_block_by_block_against_the_fakes() {
    let bed = testbed::Testbed::fake(
        "docs",
        FakeConfig {
            time_scale: 30.0,
            workspaces: vec!["acme".into()],
            oauth_consumers: vec![("key".into(), "consumer-secret".into())],
            ..FakeConfig::default()
        },
        |c| c.pod_start_latency = Duration::from_millis(200),
    )
    .await;
    let bitbucket = &bed.bitbucket;
    let dir = bed.dir();
    let bin = dir.join("bin");
    let work = dir.join("repository");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let kubeconfig = bed.kubeconfig().to_owned();
    let bbrunner_bin = Path::new(env!("CARGO_BIN_EXE_bbrunner"));
    std::os::unix::fs::symlink(bbrunner_bin, bin.join("bbrunner")).unwrap();
    let pbpaste = bin.join("pbpaste");
    std::fs::write(
        &pbpaste,
        format!(
            "#!/bin/sh\ncat '{}'\n",
            example("docker-command.txt").display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&pbpaste).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&pbpaste, permissions).unwrap();
    std::fs::copy(
        example("bitbucket-pipelines.yml"),
        work.join("bitbucket-pipelines.yml"),
    )
    .unwrap();
    let path = path_with_kubectl(&bin);
    let cache = kubectl_cache(&kubeconfig);
    let env = [
        ("PATH", path.as_str()),
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("KUBECACHEDIR", cache.to_str().unwrap()),
        ("BBRUNNER_BITBUCKET_URL", bitbucket.url()),
        ("BBRUNNER_BITBUCKET_AUTH_URL", bitbucket.url()),
        ("OAUTH_CLIENT_ID", "key"),
        ("OAUTH_CLIENT_SECRET", "consumer-secret"),
    ];
    let shell = |script: &str, stdin: Option<&str>| {
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(&work)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let input = stdin.unwrap_or("").to_owned();
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let _ = pipe.write_all(input.as_bytes());
        });
        child.wait_with_output().unwrap()
    };

    let page = std::fs::read_to_string(workspace_root().join("docs/getting-started.md")).unwrap();
    let blocks = blocks(&page);
    assert!(blocks.len() >= 5, "{blocks:?}");
    let mut operator: Option<Killed> = None;
    for (lang, text) in &blocks {
        let out = if lang == "yaml" {
            shell("kubectl apply -f -", Some(text))
        } else {
            if text.contains("bbrunner doctor") {
                // As a user would: after the pool's first runner came online.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let online = shell(
                        "kubectl -n ci get runnerpools builds -o jsonpath='{.status.online}'",
                        None,
                    );
                    if String::from_utf8_lossy(&online.stdout).trim() == "1" {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the pool never had a runner online"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            shell(text, None)
        };
        assert!(
            out.status.success(),
            "docs/getting-started.md block failed:\n{text}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("bbrunner install") && operator.is_none() {
            operator = Some(Killed(
                Command::new(bbrunner_bin)
                    .args([
                        "operator",
                        "--leader-election",
                        "--lease-namespace",
                        "bbrunner-system",
                    ])
                    .envs(env)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            ));
        }
    }
    assert!(
        operator.is_some(),
        "the page no longer installs the operator"
    );
    drop(operator);
}

/// docs/try-it-locally.md, run as the one shell session it describes: the fakes and the
/// operator in the background (killed at the end, also on failure), every command in order.
/// `cargo install` is a stand-in that does nothing: the build's binaries are on PATH.
#[test]
fn try_it_locally_runs_as_one_shell_session() {
    let scratch = scratch("try");
    let dir = scratch.path();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["bbrunner", "fake-kube", "fake-bitbucket"] {
        std::os::unix::fs::symlink(sibling(name), bin.join(name)).unwrap();
    }
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\n[ \"$1\" = install ] && exit 0\nexit 1\n",
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&cargo).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&cargo, permissions).unwrap();

    let page = std::fs::read_to_string(workspace_root().join("docs/try-it-locally.md")).unwrap();
    let script: String = blocks(&page)
        .into_iter()
        .filter(|(lang, _)| lang == "sh")
        .map(|(_, text)| text)
        .collect();
    // The page runs from the repository's root; here a stand-in of it, so that the files it
    // writes (the kubeconfig, the operator's log) land in `dir`, also on failure.
    let root = dir.join("repository");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(workspace_root().join("examples"), root.join("examples")).unwrap();
    // Whatever happens, the background processes go.
    let session = format!(
        "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\ncd '{}'\n{script}",
        root.display()
    );
    let out = Command::new("timeout")
        .args(["120", "bash", "-euo", "pipefail", "-c", &session])
        .env("PATH", path_with_kubectl(&bin))
        .env("HOME", dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docs/try-it-locally.md failed:\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It showed what it says it shows: the pool busy, the runners, and the checks passing.
    assert!(
        stdout.contains("runnerpool.bbrunner.dev/builds"),
        "{stdout}"
    );
    assert!(stdout.contains("\"state\""), "{stdout}");
    assert!(stdout.contains("PASS crd"), "{stdout}");
}
