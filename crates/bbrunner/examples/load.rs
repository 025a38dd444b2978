//! Load benchmark (BENCHMARKS.md): 50 pools × 20 runners = 1,000 runners in the fake world,
//! the release operator binary against it; prints operator RSS and CPU at steady state,
//! reconcile duration p99 and Bitbucket calls per hour per scope.
//!
//! cargo build --release -p bbrunner --bins --examples && target/release/examples/load

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_bitbucket::FakeConfig;
use serde_json::json;

const WORKSPACES: usize = 10;
const POOLS_PER_WORKSPACE: usize = 5;
const RUNNERS_PER_POOL: usize = 20;

/// Resident memory in KiB: total, anonymous (heap, stacks) and file-backed (the binary's
/// pages), so that a miss can be attributed.
#[derive(Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

fn rss(pid: u32) -> Rss {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// The operator's /metrics page.
async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

/// Cumulative bucket counts of a Prometheus histogram: (upper bound, count).
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The p99 (as its bucket's upper bound) of what a histogram observed between two scrapes.
fn p99_between(before: &str, after: &str, name: &str) -> String {
    let (b, a) = (buckets(before, name), buckets(after, name));
    let window: Vec<(f64, f64)> = a
        .iter()
        .zip(b.iter().chain(std::iter::repeat(&(0.0, 0.0))))
        .map(|(x, y)| (x.0, x.1 - y.1))
        .collect();
    let total = window.last().map(|w| w.1).unwrap_or(0.0);
    match window.iter().find(|(_, count)| *count >= 0.99 * total) {
        Some((le, _)) if le.is_finite() => format!("<= {le} s ({total} reconciles)"),
        Some(_) => format!("> the largest bucket ({total} reconciles)"),
        None => "no reconcile in the window".into(),
    }
}

#[tokio::main]
async fn main() {
    let workspaces: Vec<String> = (0..WORKSPACES).map(|i| format!("ws{i}")).collect();
    let bed = testbed::Testbed::fake(
        "load",
        FakeConfig {
            workspaces: workspaces.clone(),
            oauth_consumers: workspaces
                .iter()
                .map(|w| (format!("key-{w}"), format!("secret-{w}")))
                .collect(),
            ..FakeConfig::default()
        },
        |c| {
            c.nodes = 40;
            c.node_cpu = "64".into();
            c.node_memory = "512Gi".into();
            c.pod_start_latency = Duration::from_millis(200);
        },
    )
    .await;
    let bitbucket = &bed.bitbucket;
    let kubeconfig = bed.kubeconfig().to_owned();
    let kubectl = |stdin: String| {
        let mut child = Command::new("kubectl")
            .args(["apply", "-f", "-"])
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("kubectl");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    };
    let bbrunner = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("bbrunner");
    let crd = Command::new(&bbrunner)
        .arg("crd")
        .output()
        .expect("the release bbrunner binary, built beside this example");
    kubectl(String::from_utf8(crd.stdout).unwrap());
    let mut manifests = String::new();
    for w in &workspaces {
        manifests.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {w}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {w}}}\nstringData: {{oauthClientId: key-{w}, oauthClientSecret: secret-{w}}}\n"
        ));
        for p in 0..POOLS_PER_WORKSPACE {
            manifests.push_str(&format!(
                "---\napiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata: {{name: pool{p}, namespace: {w}}}\nspec:\n  workspace: {w}\n  labels: [p{p}]\n  credentials: {{secretRef: {{name: creds}}}}\n  scaling: {{min: {RUNNERS_PER_POOL}, max: {RUNNERS_PER_POOL}, minIdle: 0}}\n"
            ));
        }
    }
    kubectl(manifests);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // LOAD_OPERATOR_WRAPPER=heaptrack profiles the operator's heap (the figures then
    // include the wrapper's own memory).
    let mut command = match std::env::var("LOAD_OPERATOR_WRAPPER") {
        Ok(wrapper) => {
            let mut c = Command::new(wrapper);
            c.arg(&bbrunner);
            c
        }
        Err(_) => Command::new(&bbrunner),
    };
    let mut operator = command
        .args([
            "operator",
            "--bitbucket-url",
            bitbucket.url(),
            "--bitbucket-auth-url",
            bitbucket.url(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = operator.id();
    let total = WORKSPACES * POOLS_PER_WORKSPACE * RUNNERS_PER_POOL;
    let started = Instant::now();
    loop {
        let online = bitbucket.with_world(|w, now| {
            w.runners
                .iter()
                .filter(|r| fake_bitbucket::world::runner_status(r, now) == "ONLINE")
                .count()
        });
        if online >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {online} of {total} runners online after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ramp = started.elapsed().as_secs_f64();
    println!("{total} runners online after {ramp:.1} s");

    // Steady state: measure over a window.
    let window = Duration::from_secs(
        std::env::var("LOAD_WINDOW_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let requests_before = bitbucket.with_world(|w, _| w.requests.len());
    let metrics_before = scrape(port).await;
    let cpu_before = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut peak = Rss::default();
    while t0.elapsed() < window {
        let now = rss(pid);
        if now.total > peak.total {
            peak = now;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid) - cpu_before;
    let per_scope_hour = bitbucket.with_world(|w, _| {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for r in &w.requests[requests_before..] {
            *counts
                .entry(r.identity.clone().unwrap_or_default())
                .or_default() += 1;
        }
        counts
            .values()
            .map(|c| *c as f64 * 3600.0 / elapsed)
            .fold(0.0, f64::max)
    });
    let metrics = scrape(port).await;
    let report = json!({
        "pools": WORKSPACES * POOLS_PER_WORKSPACE,
        "runners": total,
        "ramp_seconds": (ramp * 10.0).round() / 10.0,
        "operator_rss_mib": mib(peak.total),
        "operator_rss_anon_mib": mib(peak.anon),
        "operator_rss_file_mib": mib(peak.file),
        "operator_cpu_percent": (ticks as f64 / 100.0 / elapsed * 1000.0).round() / 10.0,
        "reconcile_p99_in_window": p99_between(&metrics_before, &metrics, "bbrunner_reconcile_duration_seconds"),
        "max_bitbucket_calls_per_hour_per_scope": per_scope_hour.round(),
        "budget_per_identity_per_hour": 900,
    });
    println!("{report}");
    // SIGTERM first, so that a wrapper such as heaptrack writes its profile.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    for _ in 0..50 {
        if operator.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = operator.kill();
    let _ = operator.wait();
}
