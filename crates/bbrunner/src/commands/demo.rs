//! `bbrunner demo`: the whole product in one process, against simulated Bitbucket and
//! Kubernetes (fake-bitbucket and fake-kube, the same test doubles the tests use): the CRD is
//! installed, a RunnerPool created, the real operator runs, a bursty workload of steps
//! arrives, and a summary closes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bbrunner_core::pool::ScalingSpec;
use bbrunner_core::scaling::PolicyMemory;
use bbrunner_core::simulate::engine::percentile;
use bbrunner_core::units::parse_duration;
use fake_bitbucket::{FakeBitbucket, FakeConfig, StepRequest};
use fake_kube::{ClusterConfig, FakeKube};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, TextFormat};
use crate::operator::crd::RunnerPool;
use crate::operator::{self, Options, Settings};

const NAMESPACE: &str = "ci";
const POOL: &str = "builds";
/// The demo pool's custom label, which its steps ask for.
const LABEL: &str = "build";

/// The demo pool's scaling, as the operator is given it and as the simulator beside it runs.
fn pool_scaling() -> ScalingSpec {
    ScalingSpec {
        min: Some(1),
        max: Some(8),
        min_idle: Some(1),
        ..ScalingSpec::default()
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    steps_completed: usize,
    steps_failed: usize,
    steps_interrupted: usize,
    p50_wait_s: f64,
    p95_wait_s: f64,
    idle_runner_minutes: f64,
    runners_created: usize,
    runners_deleted: usize,
    /// The first runner's start, pod to online, on the simulated clock: the simulator is
    /// given it as every runner's start latency.
    start_latency_s: f64,
    leaked_runners: usize,
    /// The same workload through the simulator: our default policy and Atlassian's.
    simulated: Vec<Simulated>,
}

#[derive(Debug, Serialize)]
struct Simulated {
    policy: &'static str,
    p50_wait_s: f64,
    p95_wait_s: f64,
    idle_runner_minutes: f64,
    runners_created: usize,
}

/// The demo's workload on the simulated clock, through the simulator under the demo pool's
/// settings: bbrunner's default policy (the planner that just ran) and Atlassian's autoscaler.
/// Runners start in `start_latency` simulated seconds, as the demo's first one did.
fn simulated(steps: &[(f64, f64)], time_scale: f64, start_latency: f64) -> Result<Vec<Simulated>> {
    use bbrunner_core::scaling::{PolicyKind, Scaling};
    use bbrunner_core::simulate::{SimConfig, StartLatency, TraceStep, simulate};
    let labels: Vec<String> = vec!["self.hosted".into(), "linux".into(), LABEL.into()];
    let trace: Vec<TraceStep> = steps
        .iter()
        .map(|&(at, duration)| TraceStep {
            at: at * time_scale,
            duration,
            labels: labels.clone(),
            size: Default::default(),
            pipeline: None,
        })
        .collect();
    [
        (PolicyKind::IdleBuffer, "bbrunner idle-buffer"),
        (PolicyKind::AtlassianRatio, "Atlassian's autoscaler"),
    ]
    .into_iter()
    .map(|(kind, name)| {
        let config = SimConfig {
            labels: bbrunner_core::labels::Labels::new([LABEL])?,
            scaling: Scaling {
                policy: kind,
                ..pool_scaling().resolve()?
            },
            // As the demo's runners start: fake-kube starts every pod in the same time, and the
            // operator's calls and the agent's registration add the same few seconds.
            start_latency: StartLatency {
                mean: start_latency,
                spread: 0.0,
            },
            seed: 1,
            api_budget: 900,
            history: PolicyMemory::default(),
            durations: Default::default(),
            webhooks: false,
            cold_start: Default::default(),
        };
        let result = simulate(&trace, &config, &mut |_| {});
        // Idle time over the demo's own span, until the last step is done (the simulator
        // goes on for an hour after it).
        let last_work = result
            .timeline
            .iter()
            .rposition(|s| s.busy > 0 || s.queued > 0)
            .map_or(0, |i| i + 2);
        let idle_seconds: f64 = result.timeline[..last_work.min(result.timeline.len())]
            .windows(2)
            .map(|w| (w[1].t - w[0].t) * f64::from(w[0].starting + w[0].online - w[0].busy))
            .sum();
        Ok(Simulated {
            policy: name,
            p50_wait_s: result.p50_wait_s.round(),
            p95_wait_s: result.p95_wait_s.round(),
            idle_runner_minutes: (idle_seconds / 6.0).round() / 10.0,
            runners_created: result.runners_created,
        })
    })
    .collect()
}

/// How long fake-kube takes to start a runner pod, in the demo's simulated seconds.
const POD_START_SECONDS: f64 = 45.0;

/// A step of the workload: when (real seconds from start) and how long (on the fake's clock).
fn workload(duration: f64) -> Vec<(f64, f64)> {
    let mut steps = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    // A trickle, and a burst (a fan-out of parallel steps) every third of the run.
    let mut t = 1.0;
    while t < duration {
        steps.push((t, 90.0 + rng.f64() * 150.0));
        t += 3.0 + rng.f64() * 5.0;
    }
    for burst in 0..3 {
        let at = duration * (0.15 + 0.3 * f64::from(burst));
        for _ in 0..5 {
            steps.push((at + rng.f64(), 120.0 + rng.f64() * 120.0));
        }
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    steps
}

async fn kube_client(fake: &FakeKube) -> Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fake.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn install(client: &Client) -> Result<()> {
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crate::operator::crd::crd())
        .await
        .context("installing the CRD")?;
    let namespace: Namespace = serde_json::from_value(
        json!({"metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}),
    )?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bitbucket-credentials"},
        "stringData": {"oauthClientId": "demo", "oauthClientSecret": "demo-consumer-secret"},
    }))?;
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await?;
    let pool: RunnerPool = serde_json::from_value(json!({
        "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
        "metadata": {"name": POOL},
        "spec": {
            "workspace": "acme",
            "labels": [LABEL],
            "credentials": {"secretRef": {"name": "bitbucket-credentials"}},
            // The defaults a user gets (15 s poll, 90 s scale-down delay): the operator runs
            // on the simulated clock, so they mean what they mean in a cluster.
            "scaling": pool_scaling(),
        },
    }))?;
    Api::<RunnerPool>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &pool)
        .await?;
    Ok(())
}

#[derive(Default)]
struct View {
    /// Seconds on the simulated clock.
    now: f64,
    queued: usize,
    running: usize,
    completed: usize,
    failed: usize,
    starting: usize,
    online: usize,
    draining: usize,
}

impl View {
    const HEADER: &str =
        "sim time  queued              starting  idle  busy            draining  done  failed";

    /// One line of the live view, under [`View::HEADER`].
    fn line(&self) -> String {
        let t = self.now.max(0.0) as u64;
        format!(
            "{:>2}:{:02}:{:02}   {:>3} {:<14}  {:>8}  {:>4}  {:>4} {:<10} {:>8}  {:>4}  {:>6}",
            t / 3600,
            t / 60 % 60,
            t % 60,
            self.queued,
            bar(self.queued, '#'),
            self.starting,
            self.online.saturating_sub(self.running),
            self.running,
            bar(self.running, '='),
            self.draining,
            self.completed,
            self.failed
        )
    }
}

fn view(bitbucket: &FakeBitbucket) -> View {
    bitbucket.with_world(|w, now| {
        let mut v = View {
            now,
            ..View::default()
        };
        for s in &w.steps {
            match s.state {
                fake_bitbucket::world::StepState::Queued => v.queued += 1,
                fake_bitbucket::world::StepState::Running => v.running += 1,
                fake_bitbucket::world::StepState::Completed => v.completed += 1,
                _ => v.failed += 1,
            }
        }
        for r in &w.runners {
            match fake_bitbucket::world::runner_status(r, now) {
                "UNREGISTERED" => v.starting += 1,
                "ONLINE" => v.online += 1,
                "DISABLED" => {
                    v.online += 1;
                    v.draining += 1;
                }
                _ => {}
            }
        }
        v
    })
}

/// Leave the fakes and the operator running for the user to explore, until Ctrl-C or SIGTERM.
async fn keep_running(
    kube: &FakeKube,
    bitbucket: &FakeBitbucket,
    say: &impl Fn(String),
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("bbrunner-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = kube.write_kubeconfig(&dir.join("kubeconfig"))?;
    say(format!(
        "the demo keeps running; in another terminal:\n  export KUBECONFIG={}\n  export BBRUNNER_BITBUCKET_URL={url} BBRUNNER_BITBUCKET_AUTH_URL={url}\n  kubectl get rp -n {NAMESPACE}; kubectl describe rp -n {NAMESPACE} {POOL}\n  bbrunner doctor; bbrunner lint --from-cluster\nsend a step of 300 simulated seconds:\n  curl -H 'Content-Type: application/json' -d '{{\"workspace\": \"acme\", \"labels\": [\"self.hosted\", \"linux\", \"build\"], \"duration_s\": 300}}' $BBRUNNER_BITBUCKET_URL/_fake/steps\nCtrl-C deletes the pool and prints the summary",
        kubeconfig.display(),
        url = bitbucket.url()
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn bar(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n.min(30)).collect()
}

pub async fn run(args: &DemoArgs) -> Result<ExitCode> {
    let duration = parse_duration("--duration", &args.duration)?;
    if duration < 1.0 {
        bail!(
            "--duration {} sends no workload; give 1s or more (30s is the default)",
            args.duration
        );
    }
    if !(args.time_scale.is_finite() && (1.0..=1000.0).contains(&args.time_scale)) {
        bail!(
            "--time-scale must be from 1 to 1000 (how much faster simulated time runs; 30 is the default)"
        );
    }
    let live = args.format == TextFormat::Text || std::io::stderr().is_terminal();
    let say = |line: String| {
        if args.format == TextFormat::Text {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };

    let bitbucket = FakeBitbucket::start(FakeConfig {
        time_scale: args.time_scale,
        workspaces: vec!["acme".into()],
        oauth_consumers: vec![("demo".into(), "demo-consumer-secret".into())],
        ..FakeConfig::default()
    })
    .await?;
    let kube = FakeKube::start(
        "127.0.0.1:0".parse()?,
        ClusterConfig {
            bitbucket_url: Some(bitbucket.url().to_owned()),
            // A realistic pod start, on the demo's clock.
            pod_start_latency: Duration::from_secs_f64(POD_START_SECONDS / args.time_scale),
            ..ClusterConfig::default()
        },
    )
    .await?;
    let client = kube_client(&kube).await?;
    say(format!(
        "bbrunner demo: simulated Bitbucket at {} and Kubernetes at {} (time runs {}x)",
        bitbucket.url(),
        kube.url(),
        args.time_scale
    ));
    install(&client).await?;
    let scaling = pool_scaling();
    say(format!(
        "installed the RunnerPool CRD and pool {NAMESPACE}/{POOL} (min {}, max {}, minIdle {}); starting the operator",
        scaling.min.unwrap_or_default(),
        scaling.max.unwrap_or_default(),
        scaling.min_idle.unwrap_or_default()
    ));

    let stop = CancellationToken::new();
    let operator_task = tokio::spawn(operator::run(
        client.clone(),
        Options {
            bitbucket_url: bitbucket.url().to_owned(),
            bitbucket_auth_url: bitbucket.url().to_owned(),
            metrics_addr: None,
            leader_election: false,
            namespace: Vec::new(),
            lease_namespace: "default".into(),
            // The operator's defaults, on the simulated clock.
            settings: Settings {
                registration_ttl: Duration::from_secs(600),
                deletion_grace: Duration::from_secs(7200),
                policy: Default::default(),
            },
            // 900 requests per simulated hour.
            budget: bitbucket::RequestBudget {
                period: Duration::from_secs_f64(3600.0 / args.time_scale),
                ..bitbucket::RequestBudget::default()
            },
            cluster_id: None,
            // The operator's clock runs as fake-bitbucket's: same origin, same scale.
            clock: operator::clock::Clock::scaled(
                bitbucket.with_world(|w, _| w.epoch),
                args.time_scale,
            ),
            webhooks: None,
        },
        stop.clone(),
    ));

    // Steps fail at once while no runner is online, as in Bitbucket: wait for the first.
    let started = Instant::now();
    while view(&bitbucket).online == 0 {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no runner came online within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_start = started.elapsed().as_secs_f64();
    say(format!(
        "first runner online after {first_start:.1} s; sending the workload"
    ));

    let steps = workload(duration);
    if live {
        say(View::HEADER.to_owned());
    }
    let start = Instant::now();
    let mut next = 0;
    let mut samples: Vec<(f64, usize)> = Vec::new();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let drain_deadline = Duration::from_secs_f64(duration + 120.0);
    loop {
        let t = start.elapsed().as_secs_f64();
        while next < steps.len() && steps[next].0 <= t {
            bitbucket
                .submit_step(&StepRequest {
                    workspace: "acme".into(),
                    repository: None,
                    labels: vec!["self.hosted".into(), "linux".into(), LABEL.into()],
                    duration_s: steps[next].1,
                    size: None,
                })
                .map_err(|e| anyhow::anyhow!("submitting a step: {:?}", e.body))?;
            next += 1;
        }
        let v = view(&bitbucket);
        samples.push((t, (v.online + v.starting).saturating_sub(v.running)));
        if live && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            say(v.line());
        }
        let all_sent = next == steps.len();
        if all_sent && v.queued == 0 && v.running == 0 {
            break;
        }
        if start.elapsed() > drain_deadline {
            say("the workload did not drain in time".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if args.keep {
        keep_running(&kube, &bitbucket, &say).await?;
    }
    say("workload done; deleting the pool".into());
    Api::<RunnerPool>::namespaced(client.clone(), NAMESPACE)
        .delete(POOL, &DeleteParams::default())
        .await?;
    let cleanup = Instant::now();
    let mut last_line = Instant::now();
    while Api::<RunnerPool>::namespaced(client.clone(), NAMESPACE)
        .get_opt(POOL)
        .await?
        .is_some()
        && cleanup.elapsed() < Duration::from_secs(60)
    {
        // The runners draining and going, as the operator deletes the pool.
        if live && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            say(view(&bitbucket).line());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let _ = operator_task.await;

    let summary = bitbucket.with_world(|w, _| {
        let mut waits: Vec<f64> = w
            .steps
            .iter()
            .filter_map(|s| s.started_at.map(|t| t - s.queued_at))
            .collect();
        waits.sort_by(f64::total_cmp);
        let count = |state| w.steps.iter().filter(|s| s.state == state).count();
        let requests = |method: &str, status: u16| {
            w.requests
                .iter()
                .filter(|r| {
                    r.method == method
                        && r.status == status
                        && r.path.ends_with("runners") == (method == "POST")
                })
                .count()
        };
        Summary {
            steps_completed: count(fake_bitbucket::world::StepState::Completed),
            steps_failed: count(fake_bitbucket::world::StepState::Failed),
            steps_interrupted: count(fake_bitbucket::world::StepState::Interrupted),
            p50_wait_s: percentile(&waits, 0.50),
            p95_wait_s: percentile(&waits, 0.95),
            idle_runner_minutes: 0.0,
            start_latency_s: (first_start * args.time_scale).round(),
            runners_created: requests("POST", 201),
            runners_deleted: requests("DELETE", 204),
            leaked_runners: w.runners.len(),
            simulated: Vec::new(),
        }
    });
    // Idle runner-minutes on the demo's clock (scaled like the step waits).
    let idle_minutes = samples
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * w[0].1 as f64)
        .sum::<f64>()
        * args.time_scale
        / 60.0;
    let summary = Summary {
        idle_runner_minutes: (idle_minutes * 10.0).round() / 10.0,
        simulated: simulated(&steps, args.time_scale, first_start * args.time_scale)?,
        ..summary
    };
    match args.format {
        TextFormat::Json => println!("{}", serde_json::to_string(&summary)?),
        TextFormat::Text => {
            println!("summary (times on the simulated clock):");
            println!("  steps completed     {}", summary.steps_completed);
            println!("  steps failed        {}", summary.steps_failed);
            println!("  steps interrupted   {}", summary.steps_interrupted);
            println!("  p50 queue wait      {:.0} s", summary.p50_wait_s);
            println!("  p95 queue wait      {:.0} s", summary.p95_wait_s);
            println!("  idle runner-minutes {:.1}", summary.idle_runner_minutes);
            println!("  runners created     {}", summary.runners_created);
            println!("  runners deleted     {}", summary.runners_deleted);
            println!("  leaked runners      {}", summary.leaked_runners);
            println!(
                "the same workload through the simulator (bbrunner simulate), runners starting in {:.0} s as the first did here:",
                summary.start_latency_s
            );
            for s in &summary.simulated {
                println!(
                    "  {:<24} p50/p95 queue wait {:>4.0}/{:>4.0} s, idle runner-minutes {:>6.1}, runners created {:>3}",
                    s.policy, s.p50_wait_s, s.p95_wait_s, s.idle_runner_minutes, s.runners_created
                );
            }
            println!(
                "next: `bbrunner demo --keep` to explore the pool with kubectl and doctor; `bbrunner simulate --scenario workday` for a day of steps; docs/getting-started.md for a real cluster"
            );
        }
    }
    std::io::stdout().flush()?;
    let clean =
        summary.leaked_runners == 0 && summary.steps_interrupted == 0 && summary.steps_failed == 0;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
