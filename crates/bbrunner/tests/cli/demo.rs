use crate::util::bbrunner;

#[test]
fn demo_runs_the_operator_through_a_workload_and_leaves_nothing_behind() {
    let run = bbrunner(&["demo", "--duration", "6s", "--format", "json"], "").success();
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(
        summary["steps_completed"].as_u64().unwrap() >= 3,
        "{summary}"
    );
    assert_eq!(summary["steps_failed"], 0, "{summary}");
    assert_eq!(summary["steps_interrupted"], 0, "{summary}");
    assert_eq!(summary["leaked_runners"], 0, "{summary}");
    let created = summary["runners_created"].as_u64().unwrap();
    assert!(created >= 2, "the pool scaled up: {summary}");
    assert_eq!(
        summary["runners_deleted"].as_u64().unwrap(),
        created,
        "{summary}"
    );
    for key in ["p50_wait_s", "p95_wait_s", "idle_runner_minutes"] {
        assert!(summary[key].is_number(), "{key}");
    }
    // The simulator's runners start as the demo's first did: the pod's start and more.
    assert!(
        summary["start_latency_s"].as_f64().unwrap() >= 45.0,
        "{summary}"
    );
    // Beside it, the same workload through the simulator, ours and Atlassian's.
    let simulated = summary["simulated"].as_array().unwrap();
    assert_eq!(simulated.len(), 2, "{summary}");
    assert!(
        simulated[1]["policy"]
            .as_str()
            .unwrap()
            .contains("Atlassian")
    );
    for s in simulated {
        assert!(
            s["p50_wait_s"].as_f64().unwrap() <= s["p95_wait_s"].as_f64().unwrap()
                && s["idle_runner_minutes"].as_f64().unwrap() > 0.0,
            "{s}"
        );
        assert!(s["runners_created"].as_u64().unwrap() >= 1, "{s}");
    }
}

#[test]
fn a_demo_with_nothing_to_show_is_refused() {
    for (args, named) in [
        (&["demo", "--duration", "0s"][..], "--duration"),
        (&["demo", "--time-scale", "0"], "--time-scale"),
        (&["demo", "--time-scale", "1e9"], "--time-scale"),
    ] {
        let run = bbrunner(args, "").failure();
        assert!(run.stderr.contains(named), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn the_live_view_has_a_header_and_runs_on_the_simulated_clock() {
    let run = bbrunner(&["demo", "--duration", "3s", "--time-scale", "60"], "").success();
    let header = run
        .stdout
        .lines()
        .position(|l| l.starts_with("sim time") && l.contains("idle") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no header:\n{}", run.stdout));
    // Lines after it start with h:mm:ss of simulated time, which runs 60x: past a minute
    // within the run's few seconds.
    let times: Vec<&str> = run
        .stdout
        .lines()
        .skip(header + 1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| t.len() >= 7 && t.matches(':').count() == 2)
        .collect();
    assert!(times.iter().any(|t| *t >= "0:01:00"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("summary (times on the simulated clock)")
    );
}

/// `demo --keep` leaves everything running for exploring: kubectl sees the pool through the
/// printed KUBECONFIG, a step sent as printed runs, and Ctrl-C ends it with the summary.
#[test]
fn demo_keep_can_be_explored_with_kubectl_and_ends_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut demo = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args(["demo", "--keep", "--duration", "2s", "--time-scale", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut kubeconfig = None;
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.trim().strip_prefix("export KUBECONFIG=") {
            kubeconfig = Some(path.to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("export BBRUNNER_BITBUCKET_URL=") {
            url = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let (kubeconfig, url) = (kubeconfig.expect("no KUBECONFIG printed"), url.unwrap());
    let get = crate::util::kubectl(
        std::path::Path::new(&kubeconfig),
        &["get", "rp", "-n", "ci"],
        "",
    );
    assert!(get.status.success(), "{get:?}");
    assert!(String::from_utf8_lossy(&get.stdout).contains("builds"));
    // What the printed curl line does, with Python (curl may be missing on a fresh machine).
    let sent = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), headers={'Content-Type': 'application/json'}))",
            &format!("{url}/_fake/steps"),
            r#"{"workspace": "acme", "labels": ["self.hosted", "linux", "build"], "duration_s": 60}"#,
        ])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    // Ctrl-C.
    Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(demo.wait().unwrap().success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("leaked runners      0")),
        "{rest:?}"
    );
}
