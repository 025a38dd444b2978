//! Debian's real Prometheus scrapes the operator through a scenario (a healthy pool, a pool
//! with rejected credentials, a pool too big for any node, a queue-policy pool with steps, a
//! small API budget). Then every Grafana panel query and every alert rule is evaluated by
//! Prometheus's HTTP API, `promtool check metrics` reads the scrape and `promtool test rules`
//! runs the alert unit tests.
//!
//! Needs Debian's `prometheus` (with `promtool`; `./scripts/test` installs it as root). Where
//! it is missing this says so and skips, except under CI=true, where it fails.

use std::path::Path;

use super::*;

fn missing_prerequisite() -> Option<String> {
    ["/usr/bin/prometheus", "/usr/bin/promtool"]
        .into_iter()
        .find(|tool| !Path::new(tool).exists())
        .map(|tool| format!("{tool} is missing (apt-get install prometheus)"))
}

fn runnable(test: &str) -> bool {
    tier_runs(
        "the Prometheus tier",
        "Debian's prometheus",
        test,
        missing_prerequisite(),
    )
}

const ALERTS: &str = "deploy/helm/bbrunner/files/bbrunner-alerts.yaml";

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{}]\n\
                 scrape_configs:\n  - job_name: bbrunner\n    static_configs: [{{targets: ['{target}']}}]\n",
                workspace_file(ALERTS).canonicalize().unwrap().display()
            ),
        )
        .unwrap();
        let listen = free_local_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self {
            child,
            url: format!("http://{listen}"),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The series an instant query returns (none while Prometheus is not up yet); panics on
    /// a query Prometheus rejects.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let Some(answer) = self.get("/api/v1/query", &[("query", expr)]).await else {
            return Vec::new();
        };
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"].as_array().unwrap().clone()
    }
}

fn promtool(args: &[&str], stdin: &str) -> std::process::Output {
    let mut command = Command::new("promtool");
    command
        .args(args)
        .current_dir(workspace_file("deploy/prometheus"));
    testbed::cluster::run_with_stdin(command, stdin, "promtool is not installed")
}

/// Grafana's template variables, as "All" selects them.
fn grafana_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_file("deploy/grafana/bbrunner.json")).unwrap(),
    )
    .unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| {
                    let expr = t["expr"]
                        .as_str()
                        .unwrap()
                        .replace("$namespace", ".*")
                        .replace("$pool", ".*");
                    (title.clone(), expr)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_evaluates_every_dashboard_query_and_alert_on_a_live_scrape() {
    if !runnable("prometheus_evaluates_every_dashboard_query_and_alert_on_a_live_scrape") {
        return;
    }
    let world = World::start_with("prometheus", |c| c.node_memory = "16Gi".into()).await;
    let metrics = free_local_addr();
    let operator = world.operator(&["--metrics-addr", &metrics]);
    let prometheus = Prometheus::start(&world.dir, &metrics);

    world.pool("builds", managed(1, 3)).await;
    let mut broken = managed(1, 1);
    world.use_wrong_credentials(&mut broken, "nope").await;
    world.pool("broken", broken).await;
    let mut huge = managed(1, 1);
    huge["runner"] = json!({"size": "8x"});
    world.pool("huge", huge).await;
    // Its own label, so that the workspace pool's runners do not take its steps.
    let mut queue = managed(1, 4);
    queue["labels"] = json!(["deploy"]);
    queue["repository"] = json!("app");
    queue["scaling"]["policy"] = json!("queue");
    // With a warm cache, for the cache panels.
    queue["cache"] = json!({"size": "10Gi"});
    world.pool("app-builds", queue).await;

    eventually("prometheus scrapes the operator", 30, || async {
        !prometheus.query("bbrunner_build_info").await.is_empty()
    })
    .await;
    eventually("the healthy pools have runners online", 30, || async {
        online(&world.runners()) >= 2
    })
    .await;
    // Steps for the queue-policy pool, arriving while Prometheus watches.
    for _ in 0..3 {
        world
            .bitbucket
            .submit_step(&StepRequest {
                workspace: "acme".into(),
                repository: Some("app".into()),
                labels: vec!["self.hosted".into(), "deploy".into()],
                duration_s: 60.0,
                size: None,
            })
            .unwrap();
    }
    eventually("queue waits reach Prometheus", 40, || async {
        !prometheus
            .query("rate(bbrunner_step_queue_wait_seconds_count[1m]) > 0")
            .await
            .is_empty()
    })
    .await;

    // The operator restarts with a small share of the budget (as when clusters split an
    // identity's 900), so that the budget alert has something to say. Counters restart from
    // zero, as in any restart; rates span it.
    drop(operator);
    let _operator = world.operator(&["--metrics-addr", &metrics, "--budget", "100"]);
    eventually("the restarted operator's budget is scraped", 30, || async {
        !prometheus
            .query("bbrunner_bitbucket_budget_remaining_requests < 100")
            .await
            .is_empty()
    })
    .await;

    for (panel, expr) in grafana_queries() {
        let series = prometheus.query(&expr).await;
        assert!(
            !series.is_empty(),
            "panel {panel:?}: `{expr}` returned no data"
        );
    }

    // Every rule loaded and evaluating cleanly.
    let rules = prometheus.get("/api/v1/rules", &[]).await.unwrap();
    let rules: Vec<Value> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rules.len(), 4, "{rules:?}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // The scenario's failures make three alerts pending (each has a `for:`); which pool or
    // identity each names is checked too.
    eventually("the scenario's alerts are pending", 20, || async {
        let alerts = prometheus.get("/api/v1/alerts", &[]).await.unwrap();
        let active = alerts["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has = |name: &str, label: &str, value: &str| {
            active
                .iter()
                .any(|a| a["labels"]["alertname"] == name && a["labels"][label] == value)
        };
        has("BbrunnerPoolDegraded", "pool", "broken")
            && has("BbrunnerPoolHasNoRunnerOnline", "pool", "huge")
            && active
                .iter()
                .any(|a| a["labels"]["alertname"] == "BbrunnerBitbucketBudgetLow")
            && !has("BbrunnerPoolHasNoRunnerOnline", "pool", "builds")
    })
    .await;
    // Steps here wait seconds, not the alert's five minutes: its measure must still return
    // data, which its threshold then filters.
    let wait_rule = rules
        .iter()
        .find(|r| r["name"] == "BbrunnerStepsWaitLong")
        .unwrap();
    let (measure, threshold) = wait_rule["query"]
        .as_str()
        .unwrap()
        .rsplit_once(" > ")
        .unwrap();
    assert_eq!(threshold, "300");
    assert!(
        !prometheus.query(measure).await.is_empty(),
        "`{measure}` returned no data"
    );

    // The scrape passes promtool's lint.
    let scrape = scrape(&metrics).await;
    let lint = promtool(&["check", "metrics"], &scrape);
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let tests = promtool(&["test", "rules", "alerts.test.yaml"], "");
    assert!(
        tests.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&tests.stdout),
        String::from_utf8_lossy(&tests.stderr)
    );
}
