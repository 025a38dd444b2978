use testbed::scratch;

use crate::util::{bbrunner, example};

#[test]
fn json_report_has_every_policy_and_field() {
    let run = bbrunner(&["simulate", "--scenario", "burst", "--format", "json"], "").success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let policies = report["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // The always-warm oracle closes every run, and every row is measured against it.
    assert_eq!(names, ["idle-buffer", "queue", "atlassian-ratio", "oracle"]);
    let oracle = &policies[3];
    assert_eq!(oracle["peak_runners"], 10, "{oracle}");
    assert_eq!(oracle["p95_vs_oracle"], 1.0);
    for p in policies {
        let ratio = p["p95_wait_s"].as_f64().unwrap() / oracle["p95_wait_s"].as_f64().unwrap();
        assert!(
            (p["p95_vs_oracle"].as_f64().unwrap() - ratio).abs() < 1e-9,
            "{p}"
        );
        for key in [
            "idle_vs_oracle",
            "steps",
            "failed_steps",
            "p50_wait_s",
            "p95_wait_s",
            "p99_wait_s",
            "max_wait_s",
            "idle_runner_hours",
            "busy_runner_hours",
            "peak_runners",
            "api_calls_per_hour",
        ] {
            assert!(p[key].is_number(), "{key} in {p}");
        }
    }
    // Progress goes to a terminal only; here stderr is a pipe.
    assert_eq!(run.stderr, "");
}

#[test]
fn same_seed_same_output() {
    let args = [
        "simulate",
        "--scenario",
        "workday",
        "--seed",
        "9",
        "--policy",
        "idle-buffer",
    ];
    assert_eq!(
        bbrunner(&args, "").success().stdout,
        bbrunner(&args, "").success().stdout
    );
}

#[test]
fn a_trace_file_and_a_pool_manifest_drive_the_run() {
    let scratch = scratch("sim");
    let dir = scratch.path();
    let pool = dir.join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata:\n  name: p\nspec:\n  labels: [build]\n  scaling:\n    min: 2\n    max: 4\n",
    )
    .unwrap();
    let trace = example("trace.jsonl");
    let run = bbrunner(
        &[
            "simulate",
            "--trace",
            trace.to_str().unwrap(),
            "--pool",
            pool.to_str().unwrap(),
            "--policy",
            "atlassian-ratio:120s",
        ],
        "",
    )
    .success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("policy"));
    assert!(lines[1].starts_with("atlassian-ratio:120s"));
    // The trace's steps carry no `build` label, so a pool labelled build serves them all.
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(fields[1], "6");
    assert_eq!(fields[2], "0");

    let plot = dir.join("plot.svg");
    bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--plot",
            plot.to_str().unwrap(),
        ],
        "",
    )
    .success();
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"));
    for text in [
        // The title says what was simulated.
        "scenario steady, seed 1: pool min 1, max 10, minIdle 3; runner start 45 s; 4 weeks learned",
        "queued steps",
        "runners online",
        "runners busy",
        "pool max",
        "idle-buffer",
        "atlassian-ratio",
        "oracle",
        // The distribution of waits, and the Okabe-Ito blue (colour-blind safe).
        "queue wait: share of steps started within",
        "#0072B2",
    ] {
        assert!(svg.contains(text), "{text}");
    }
}

/// `simulate` with `args` fails, prints nothing on stdout and says `says` on stderr.
fn refuses(args: &[&str], says: &str) {
    let run = bbrunner(args, "").failure();
    assert_eq!(run.stdout, "", "{args:?}");
    assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
}

#[test]
fn bad_input_is_named() {
    let scratch = scratch("sim-bad");
    let dir = scratch.path();
    let trace = dir.join("bad.jsonl");
    std::fs::write(&trace, "{\"at\": 0, \"duration\": 1}\n{\"at\": \"x\"}\n{\"at\": 1, \"duration\": 1, \"size\": \"3x\"}\n").unwrap();
    let run = bbrunner(&["simulate", "--trace", trace.to_str().unwrap()], "").failure();
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("trace line 2:"), "{}", run.stderr);
    assert!(run.stderr.contains("trace line 3:"), "{}", run.stderr);

    let pool = dir.join("pool.yaml");
    std::fs::write(&pool, "spec:\n  scaling:\n    min: 5\n    max: 2\n").unwrap();
    let pool = pool.to_str().unwrap();
    for (args, says) in [
        (
            &["simulate", "--scenario", "steady", "--pool", pool][..],
            "min (5) is greater than max (2)",
        ),
        (
            &["simulate", "--scenario", "monday"],
            "--scenario \"monday\" is not built in",
        ),
        (
            &["simulate", "--scenario", "steady", "--policy", "magic"],
            "--policy \"magic\" is not a policy",
        ),
        (&["simulate"], "--trace"),
        (&["simulate"], "--scenario"),
    ] {
        refuses(args, says);
    }
}

#[test]
fn inputs_that_would_hang_or_mislead_are_refused_or_flagged() {
    let scratch = scratch("sim-hostile");
    let dir = scratch.path();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();

    refuses(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--policy",
            "idle-buffer:0s",
        ],
        "under 1s",
    );

    std::fs::write(
        path("zero-poll.yaml"),
        "kind: RunnerPool\nspec:\n  scaling:\n    pollInterval: 0s\n",
    )
    .unwrap();
    refuses(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--pool",
            &path("zero-poll.yaml"),
        ],
        "pollInterval",
    );

    for (line, field) in [
        ("{\"at\": 1e12, \"duration\": 60}", "\"at\""),
        ("{\"at\": 0, \"duration\": 1e300}", "\"duration\""),
    ] {
        std::fs::write(path("far.jsonl"), format!("{line}\n")).unwrap();
        refuses(&["simulate", "--trace", &path("far.jsonl")], field);
    }

    // Polling every second costs more calls than Bitbucket allows: flagged, in both outputs.
    let run = bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--policy",
            "atlassian-ratio:1s",
            "--format",
            "json",
        ],
        "",
    )
    .success();
    assert!(
        run.stderr.contains("exceed Bitbucket's 1000"),
        "{}",
        run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        report["policies"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("429"),
        "{report}"
    );
    let run = bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--policy",
            "atlassian-ratio:1s",
        ],
        "",
    )
    .success();
    assert!(
        run.stdout.contains("atlassian-ratio:1s (ERROR)"),
        "{}",
        run.stdout
    );

    // What migrate writes: several documents, comments, a pool after a Secret.
    std::fs::write(
        path("migrated.yaml"),
        "# from migrate\napiVersion: v1\nkind: Secret\nmetadata: {name: creds}\n---\napiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata: {name: builds}\nspec:\n  workspace: acme\n  scaling: {min: 2, max: 4}\n",
    )
    .unwrap();
    bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--pool",
            &path("migrated.yaml"),
        ],
        "",
    )
    .success();

    let run = bbrunner(
        &[
            "simulate",
            "--scenario",
            "steady",
            "--plot",
            &path("plot.png"),
        ],
        "",
    )
    .failure();
    assert!(run.stderr.contains(".svg"), "{}", run.stderr);
    assert!(!dir.join("plot.png").exists());
}

/// The policy's figures of one run (`--format json`), by policy name.
fn policy(args: &[&str], name: &str) -> serde_json::Value {
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    by_name(&json_report(&all), name)
}

/// The report of a `simulate` run given `args`, as `--format json` prints it.
fn json_report(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    serde_json::from_str(&bbrunner(&all, "").success().stdout).unwrap()
}

/// One policy's figures in a report.
fn by_name(report: &serde_json::Value, name: &str) -> serde_json::Value {
    report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap()
}

#[test]
fn history_weeks_teach_the_forecast_before_the_measured_week() {
    let scratch = scratch("sim-history");
    let dir = scratch.path();
    // Two weeks of the same nightly batch: eight 20-minute steps at 02:00 on Monday.
    let week = 7.0 * 86_400.0;
    let mut lines = String::new();
    for w in 0..2 {
        for i in 0..8 {
            let at = f64::from(w) * week + 7200.0 + f64::from(i);
            lines.push_str(&format!(
                "{{\"at\": {at}, \"duration\": 1200, \"labels\": [\"self.hosted\", \"linux\"]}}\n"
            ));
        }
    }
    let trace = dir.join("nightly.jsonl");
    std::fs::write(&trace, lines).unwrap();
    let trace = trace.to_str().unwrap();
    let both = policy(
        &["--trace", trace, "--policy", "idle-buffer"],
        "idle-buffer",
    );
    let second = policy(
        &[
            "--trace",
            trace,
            "--history-weeks",
            "1",
            "--policy",
            "idle-buffer",
        ],
        "idle-buffer",
    );
    // With the first week as history, only the second is measured, and its runners were ready.
    assert_eq!(
        (both["steps"].as_u64(), second["steps"].as_u64()),
        (Some(16), Some(8))
    );
    assert!(
        second["p95_wait_s"].as_f64() < both["p95_wait_s"].as_f64(),
        "{second} against {both}"
    );

    for (args, says) in [
        (
            &["--trace", trace, "--history-weeks", "2"][..],
            "no step after its first 2 weeks",
        ),
        (
            &["--scenario", "steady", "--history-weeks", "60"],
            "more than 52",
        ),
    ] {
        let mut all = vec!["simulate"];
        all.extend_from_slice(args);
        let run = bbrunner(&all, "").failure();
        assert!(
            run.stderr.contains("--history-weeks") && run.stderr.contains(says),
            "{args:?}: {}",
            run.stderr
        );
    }
    // A scenario's pool has four weeks behind it by default; none is a cold start.
    let learned = policy(
        &["--scenario", "nightly", "--policy", "idle-buffer"],
        "idle-buffer",
    );
    let cold = policy(
        &[
            "--scenario",
            "nightly",
            "--history-weeks",
            "0",
            "--policy",
            "idle-buffer",
        ],
        "idle-buffer",
    );
    assert_eq!(learned["steps"], cold["steps"], "the same measured day");
    assert_ne!(learned["idle_runner_hours"], cold["idle_runner_hours"]);
}

#[test]
fn pipelines_are_measured_by_their_overhead_with_and_without_webhooks() {
    let args = [
        "simulate",
        "--scenario",
        "workday",
        "--policy",
        "idle-buffer",
        "--policy",
        "idle-buffer,webhooks",
        "--policy",
        "idle-buffer,webhooks,no-lookahead",
    ];
    let table = bbrunner(&args, "").success().stdout;
    assert!(
        table.lines().next().unwrap().contains("pipe p95 s"),
        "{table}"
    );
    let report = json_report(&args);
    let by_name = |name: &str| by_name(&report, name);
    let (polled, hooked, bare) = (
        by_name("idle-buffer"),
        by_name("idle-buffer,webhooks"),
        by_name("idle-buffer,webhooks,no-lookahead"),
    );
    let oracle = by_name("oracle");
    for p in [&polled, &hooked, &bare, &oracle] {
        assert!(p["pipelines"].as_u64().unwrap() > 50, "{p}");
        let ratio = p["pipeline_overhead_p95_s"].as_f64().unwrap()
            / oracle["pipeline_overhead_p95_s"].as_f64().unwrap();
        assert!(
            (p["pipeline_overhead_p95_vs_oracle"].as_f64().unwrap() - ratio).abs() < 1e-9,
            "{p}"
        );
    }
    // Told of each push at once, the pool readies a fan-out's runners before a poll would
    // have seen it; without the lookahead the webhooks have nothing to act on.
    let p95 = |p: &serde_json::Value| p["p95_wait_s"].as_f64().unwrap();
    assert!(p95(&hooked) < p95(&polled), "{hooked} vs {polled}");
    assert_eq!(p95(&bare), p95(&polled));

    for (policy, complaint) in [
        ("atlassian-ratio,webhooks", "reads neither webhooks"),
        ("queue,telepathy", "\"telepathy\" is not an option"),
    ] {
        refuses(
            &["simulate", "--scenario", "steady", "--policy", policy],
            complaint,
        );
    }
}

#[test]
fn a_pipeline_trace_learns_durations_from_its_history_weeks() {
    let scratch = scratch("sim-pipes");
    let dir = scratch.path();
    let trace = dir.join("pipes.jsonl");
    // A build then eight tests (more than the default pool keeps warm), every hour of a working day, for two weeks: the first week
    // teaches the durations the second is looked ahead with.
    let mut lines = String::new();
    for week in 0..2 {
        for hour in 0..10 {
            let at = f64::from(week) * 7.0 * 86_400.0 + 8.0 * 3600.0 + f64::from(hour) * 3600.0;
            lines.push_str(&format!(
                "{{\"at\": {at}, \"repository\": \"app\", \"pipeline\": [[{{\"name\": \"build\", \"duration\": 300}}], [{}]]}}\n",
                (0..8)
                    .map(|i| format!("{{\"name\": \"t{i}\", \"duration\": 60}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    std::fs::write(&trace, lines).unwrap();
    let overhead = |name: &str| {
        policy(
            &[
                "--trace",
                trace.to_str().unwrap(),
                "--history-weeks",
                "1",
                "--policy",
                name,
            ],
            name,
        )["pipeline_overhead_p95_s"]
            .as_f64()
            .unwrap()
    };
    let (ahead, blind) = (overhead("idle-buffer,webhooks"), overhead("idle-buffer"));
    assert!(ahead + 20.0 < blind, "{ahead} vs {blind}");
}

#[test]
fn a_warm_cache_spares_cold_starts_and_the_pools_spec_cache_turns_it_on() {
    let scratch = scratch("sim-cache");
    let dir = scratch.path();
    let cached_pool = dir.join("cached.yaml");
    std::fs::write(
        &cached_pool,
        "kind: RunnerPool\nspec:\n  cache: {size: 50Gi}\n  scaling: {max: 10}\n",
    )
    .unwrap();
    let run = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "simulate",
            "--scenario",
            "pipelines",
            "--cold-start",
            "90s",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = bbrunner(&args, "").success().stdout;
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        report["policies"].as_array().unwrap().clone()
    };
    let field = |policies: &[serde_json::Value], name: &str, key: &str| {
        let policy = policies.iter().find(|p| p["name"] == name).unwrap();
        policy[key].as_f64().unwrap()
    };
    let uncached = run(&[]);
    let cached = run(&["--pool", cached_pool.to_str().unwrap()]);
    let flag = run(&["--cache-retain", "10"]);
    assert_eq!(cached, flag, "spec.cache keeps max (10) volumes by default");
    for policy in ["idle-buffer", "queue"] {
        let cold = |p: &[serde_json::Value]| field(p, policy, "cold_steps");
        assert!(cold(&uncached) > 0.0);
        assert!(cold(&cached) < cold(&uncached), "{policy}");
        assert!(field(&cached, policy, "cache_volumes_peak") > 0.0);
        assert!(
            field(&cached, policy, "pipeline_overhead_p50_s")
                < field(&uncached, policy, "pipeline_overhead_p50_s"),
            "{policy}: the cache shortens pipelines"
        );
    }
    // Atlassian's autoscaler has no cache; the oracle's runners never start cold.
    assert_eq!(
        field(&cached, "atlassian-ratio", "cold_steps"),
        field(&uncached, "atlassian-ratio", "cold_steps")
    );
    assert_eq!(field(&cached, "atlassian-ratio", "cache_volumes_peak"), 0.0);
    assert_eq!(field(&uncached, "oracle", "cold_steps"), 0.0);
    // The table shows the cold steps and volumes only where they are modelled.
    let table = bbrunner(
        &["simulate", "--scenario", "burst", "--cold-start", "1m"],
        "",
    )
    .success()
    .stdout;
    assert!(
        table.lines().next().unwrap().ends_with("cold volumes"),
        "{table}"
    );
    let plain = bbrunner(&["simulate", "--scenario", "burst"], "")
        .success()
        .stdout;
    assert!(!plain.contains("volumes"), "{plain}");
    refuses(
        &["simulate", "--scenario", "burst", "--cold-start", "3h"],
        "--cold-start 3h: more than Bitbucket's two-hour step limit",
    );
    refuses(
        &["simulate", "--scenario", "burst", "--cold-start", "fast"],
        "--cold-start",
    );
}
