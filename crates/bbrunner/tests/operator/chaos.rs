//! Fault injection against the real operator binary. The short version runs in CI; scale it
//! with BBRUNNER_CHAOS_SECONDS, BBRUNNER_CHAOS_RESTARTS and BBRUNNER_CHAOS_SEED (RELIABILITY.md).

use std::collections::BTreeSet;

use fake_bitbucket::Faults as BitbucketFaults;
use fake_kube::Faults as KubeFaults;

use super::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pool's pods, read through the faults the test itself injects.
#[derive(Clone, Copy, PartialEq)]
enum Convergence {
    /// The operator's own part: as many runners as the status wants, each with a live pod
    /// (running or still starting). What comes after is pod start and registration, which no
    /// poll can hurry.
    Count,
    /// Every runner backed by one running pod and ONLINE, and no step waiting.
    Full,
}

async fn converged(world: &World, kind: Convergence) -> bool {
    let status = world.status("builds").await;
    let runners = runner_uuid_labels(world);
    let phases: &[&str] = match kind {
        Convergence::Count => &["Pending", "Running"],
        Convergence::Full => &["Running"],
    };
    let pods = pod_uuids(world, phases).await;
    let ready = kind == Convergence::Count
        || (world.runners().iter().all(|r| r["state"] == "ONLINE")
            && world.steps(StepState::Queued) == 0);
    !runners.is_empty()
        && runners == pods
        && ready
        && status["desired"].as_u64() == Some(runners.len() as u64)
}

/// Seconds from `calm` until `kind` of convergence first held across two checks more than a
/// poll apart (so that the status read is one written after `calm`); None within 90 s.
async fn held_after(world: &World, calm: Instant, kind: Convergence) -> Option<f64> {
    while calm.elapsed() < Duration::from_secs(90) {
        if converged(world, kind).await {
            let first = calm.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(1300)).await;
            if converged(world, kind).await {
                return Some(first);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The runner UUIDs Bitbucket lists, braces trimmed (as pod labels carry them).
fn runner_uuid_labels(world: &World) -> BTreeSet<String> {
    world
        .runners()
        .iter()
        .map(|r| {
            r["uuid"]
                .as_str()
                .unwrap()
                .trim_matches(|c| c == '{' || c == '}')
                .to_owned()
        })
        .collect()
}

/// The runner UUIDs of the pool's pods in one of `phases`, not being deleted.
async fn pod_uuids(world: &World, phases: &[&str]) -> BTreeSet<String> {
    world
        .pods()
        .await
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|phase| phases.contains(&phase))
        })
        .map(|p| p.metadata.labels.as_ref().unwrap()["bbrunner.dev/runner-uuid"].clone())
        .collect()
}

async fn pods_despite_faults(world: &World) -> Vec<Pod> {
    for _ in 0..50 {
        if let Ok(list) = Api::<Pod>::namespaced(world.client.clone(), NS)
            .list(&ListParams::default())
            .await
        {
            return list.items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vec::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn invariants_hold_under_faults_crashes_and_node_loss() {
    let seconds = env_or("BBRUNNER_CHAOS_SECONDS", 24);
    let restarts = env_or("BBRUNNER_CHAOS_RESTARTS", 4);
    let seed = env_or("BBRUNNER_CHAOS_SEED", 7);
    let mut rng = fastrand::Rng::with_seed(seed);
    let world = World::start_with("chaos", |c| c.nodes = 4).await;
    let operator_args = ["--registration-ttl", "20s"];
    // Every operator appends to one log, shown when the pool does not converge.
    let log_path = world.dir.join("operator.log");
    let start_operator = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        world.operator_logging(&operator_args, "info", Stdio::from(log))
    };
    let mut operator = Some(start_operator());
    let mut spec = managed(1, 6);
    spec["scaling"]["scaleDownDelay"] = json!("2s");
    world.pool("builds", spec).await;
    eventually("the first runner online", 30, || async {
        online(&world.runners()) == 1
    })
    .await;

    // Faults from here on.
    world.bitbucket.with_world(|w, _| {
        w.faults = BitbucketFaults {
            error_rate: 0.3,
            status: Some(503),
            latency_ms: 100,
            reset_rate: 0.1,
            ..BitbucketFaults::default()
        };
    });
    let kube_faults = KubeFaults {
        error_rates: ["get", "list", "create", "patch", "delete"]
            .iter()
            .map(|v| (v.to_string(), 0.1))
            .collect(),
        latency_ms: 20,
        drop_watches_after_ms: 2000,
    };
    world.fake().cluster().set_faults(kube_faults);

    let start = Instant::now();
    let duration = Duration::from_secs(seconds);
    // Restarts at random moments of the run (times in tenths of a second).
    let mut restart_at: Vec<u64> = (0..restarts)
        .map(|_| rng.u64(5..seconds * 10 - 5))
        .collect();
    restart_at.sort_unstable();
    let mut next_restart = 0;
    let mut kills = 0;
    let mut restarted = 0;
    let mut outage_done = false;
    let mut node_removed = false;
    let mut tick = 0u64;
    while start.elapsed() < duration {
        tick += 1;
        // Bursty workload (now and then a fan-out) in the first 60% of the run, so that the
        // convergence measured at the end is recovery from faults, not a queue draining.
        if tick.is_multiple_of(10) && start.elapsed() < duration * 6 / 10 {
            let n = if rng.u8(0..4) == 0 {
                rng.usize(3..7)
            } else {
                rng.usize(0..2)
            };
            world.submit(n, 60.0 + rng.f64() * 120.0);
        }
        let now_tenths = start.elapsed().as_millis() as u64 / 100;
        while next_restart < restart_at.len() && restart_at[next_restart] <= now_tenths {
            next_restart += 1;
            // SIGKILL at any point of a reconcile, then a fresh operator.
            drop(operator.take());
            restarted += 1;
            tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
            operator = Some(start_operator());
        }
        if tick.is_multiple_of(45) {
            let pods = pods_despite_faults(&world).await;
            if let Some(pod) = (!pods.is_empty()).then(|| pods[rng.usize(0..pods.len())].clone())
                && world
                    .fake()
                    .kill_pod(NS, pod.metadata.name.as_deref().unwrap_or(""))
            {
                kills += 1;
            }
        }
        let elapsed = start.elapsed().as_secs_f64() / seconds as f64;
        if !outage_done && elapsed > 0.3 {
            world.fake().cluster().outage(Duration::from_millis(1500));
            outage_done = true;
        }
        if !node_removed && elapsed > 0.7 {
            node_removed = world.fake().remove_node("node-4");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Faults stop; the pool must converge.
    world
        .bitbucket
        .with_world(|w, _| w.faults = BitbucketFaults::default());
    world.fake().cluster().set_faults(KubeFaults::default());
    let calm = Instant::now();
    let Some(counted_at) = held_after(&world, calm, Convergence::Count).await else {
        panic!(
            "runner count never matched desired within 90 s\n{}",
            diagnosis(&world, &log_path).await
        )
    };
    let Some(convergence) = held_after(&world, calm, Convergence::Full).await else {
        panic!(
            "no convergence within 90 s after the faults stopped\n{}",
            diagnosis(&world, &log_path).await
        )
    };

    let (
        interrupted_by_us,
        interrupted_otherwise,
        completed,
        total,
        duplicates,
        requests,
        injected_5xx,
        no_runner,
    ) = world.bitbucket.with_world(|w, _| {
        let by_us = w
            .steps
            .iter()
            .filter(|s| s.failure_reason.as_deref() == Some("its runner was deleted"))
            .count();
        let other = w
            .steps
            .iter()
            .filter(|s| {
                s.state == StepState::Interrupted
                    && s.failure_reason.as_deref() != Some("its runner was deleted")
            })
            .count();
        let completed = w
            .steps
            .iter()
            .filter(|s| s.state == StepState::Completed)
            .count();
        let no_runner = w
            .steps
            .iter()
            .filter(|s| {
                s.failure_reason.as_deref() == Some("no online runner has all of the step's labels")
            })
            .count();
        let duplicates: u64 = w.runners.iter().map(|r| r.duplicate_agent_polls).sum();
        let requests = w
            .requests
            .iter()
            .filter(|r| r.identity.as_deref() == Some("consumer:key"))
            .count();
        let injected = w.requests.iter().filter(|r| r.status == 503).count();
        (
            by_us,
            other,
            completed,
            w.steps.len(),
            duplicates,
            requests,
            injected,
            no_runner,
        )
    });
    let summary = json!({
        "seed": seed, "seconds": seconds, "operator_restarts": restarted, "pods_killed": kills,
        "node_removed": node_removed, "bitbucket_5xx_injected": injected_5xx, "steps": total,
        "steps_completed": completed, "interrupted_by_operator": interrupted_by_us,
        "interrupted_by_injected_failures": interrupted_otherwise, "failed_no_online_runner": no_runner,
        "duplicate_agent_polls": duplicates,
        "bitbucket_requests": requests, "convergence_s": (convergence * 10.0).round() / 10.0,
        "count_convergence_s": (counted_at * 10.0).round() / 10.0,
    });
    println!("chaos summary: {summary}");
    assert_eq!(
        interrupted_by_us, 0,
        "the operator deleted a busy runner: {summary}"
    );
    assert_eq!(duplicates, 0, "two pods ran one runner: {summary}");
    assert!(requests <= 900, "the API budget was exceeded: {summary}");
    assert!(
        restarted as u64 == restart_at.len() as u64 && injected_5xx > 0,
        "faults were not injected: {summary}"
    );
    drop(operator);
}

/// What a failed convergence needs to be understood: the pool's status, Bitbucket's runners,
/// the pods, and the end of the operators' log.
async fn diagnosis(world: &World, log_path: &std::path::Path) -> String {
    let pods: Vec<Value> = world
        .pods()
        .await
        .iter()
        .map(|p| {
            json!({
                "name": p.metadata.name,
                "uuid": p.metadata.labels.as_ref().and_then(|l| l.get("bbrunner.dev/runner-uuid")),
                "phase": p.status.as_ref().and_then(|s| s.phase.clone()),
                "node": p.spec.as_ref().and_then(|s| s.node_name.clone()),
                "deleting": p.metadata.deletion_timestamp.is_some(),
            })
        })
        .collect();
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(80).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!(
        "status: {}\nrunners: {}\npods: {}\noperator log (last 80 lines):\n{}",
        world.status("builds").await,
        json!(world.runners()),
        json!(pods),
        tail.join("\n")
    )
}

fn runner_uuids(runners: &[Value]) -> BTreeSet<String> {
    runners
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_owned())
        .collect()
}

async fn live_pod_names(world: &World) -> BTreeSet<String> {
    world
        .pods()
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// Bitbucket answers every API call with 429 and `Retry-After` for a while: the operator waits
/// as told, says so in its status once the client's retries are spent, deletes no pod on the
/// strength of lists it could not read, and afterwards serves the steps that queued meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_is_waited_out_without_losing_a_pod_or_a_step() {
    const STORM: Duration = Duration::from_secs(16);
    const RETRY_AFTER_S: u64 = 3;
    let world = World::start("storm").await;
    let _op = world.operator(&[]);
    world.pool("builds", managed(2, 4)).await;
    eventually("two runners online", 30, || async {
        online(&world.runners()) == 2
    })
    .await;
    let runners_before = runner_uuids(&world.runners());
    let pods_before = live_pod_names(&world).await;

    world.bitbucket.with_world(|w, _| {
        w.faults = BitbucketFaults {
            error_rate: 1.0,
            status: Some(429),
            retry_after_s: Some(RETRY_AFTER_S),
            ..BitbucketFaults::default()
        };
        w.requests.clear();
    });
    let storm_start = Instant::now();
    world.submit(4, 30.0);
    eventually(
        "Degraded/RateLimited during the storm",
        STORM.as_secs(),
        || async {
            world.status("builds").await["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c["type"] == "Degraded"
                            && c["status"] == "True"
                            && c["reason"] == "RateLimited"
                    })
                })
        },
    )
    .await;
    tokio::time::sleep(STORM.saturating_sub(storm_start.elapsed())).await;
    let throttled = world
        .bitbucket
        .with_world(|w, _| w.requests.iter().filter(|r| r.status == 429).count());
    let pods_after_storm = live_pod_names(&world).await;
    world
        .bitbucket
        .with_world(|w, _| w.faults = BitbucketFaults::default());
    println!("429 storm: {throttled} requests in {STORM:?}");
    assert!(
        pods_before.is_subset(&pods_after_storm),
        "a pod was deleted during the storm: before {pods_before:?}, after {pods_after_storm:?}"
    );
    assert_eq!(runner_uuids(&world.runners()), runners_before);
    // Each call chain waits Retry-After between tries, and the hub and the pool's reconcile are
    // the only two chains: a client ignoring Retry-After (1 s polls, 100 ms backoff) sends
    // several times more.
    let polite_bound = 2 * (STORM.as_secs() / RETRY_AFTER_S + 1) as usize;
    assert!(
        throttled <= polite_bound,
        "{throttled} requests during a {STORM:?} storm with Retry-After {RETRY_AFTER_S} s (at most {polite_bound})"
    );

    every_step_served_and_the_pool_healthy(&world, 4).await;
}

/// Once faults stop: all `steps` submitted complete, none lost, and no Degraded condition.
async fn every_step_served_and_the_pool_healthy(world: &World, steps: usize) {
    eventually(
        "every step served and the pool healthy again",
        60,
        || async {
            let healthy = !world.status("builds").await["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Degraded" && c["status"] == "True")
                });
            healthy && world.steps(StepState::Completed) == steps
        },
    )
    .await;
    let interrupted = world.bitbucket.with_world(|w, _| {
        w.steps
            .iter()
            .filter(|s| s.state == StepState::Interrupted || s.state == StepState::Failed)
            .count()
    });
    assert_eq!(interrupted, 0, "a step was lost to the faults");
}

/// Every API request takes 10 s (below the client's 15 s request timeout): the operator is slow
/// but deletes no pod, starts no second pod for a runner, and the steps submitted meanwhile run.
#[tokio::test(flavor = "multi_thread")]
async fn ten_second_latencies_slow_the_pool_but_lose_nothing() {
    let world = World::start("latency").await;
    let _op = world.operator(&[]);
    world.pool("builds", managed(1, 4)).await;
    eventually("a runner online", 30, || async {
        online(&world.runners()) == 1
    })
    .await;
    let pods_before = live_pod_names(&world).await;
    world.bitbucket.with_world(|w, _| {
        w.faults = BitbucketFaults {
            latency_ms: 10_000,
            ..BitbucketFaults::default()
        };
    });
    world.submit(3, 30.0);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let pods_after = live_pod_names(&world).await;
    world
        .bitbucket
        .with_world(|w, _| w.faults = BitbucketFaults::default());
    assert!(
        pods_before.is_subset(&pods_after),
        "a pod was deleted under latency: before {pods_before:?}, after {pods_after:?}"
    );
    every_step_served_and_the_pool_healthy(&world, 3).await;
    let duplicates: u64 = world
        .bitbucket
        .with_world(|w, _| w.runners.iter().map(|r| r.duplicate_agent_polls).sum());
    assert_eq!(duplicates, 0, "two pods ran one runner");
}
