//! Benchmark: simulate a 30-day trace of 2,000 steps a day under each policy and print the
//! wall time of each run (one thread); then 25,000 to 200,000 steps queued at once, doubling,
//! with each run's time against the one before (about 2 when the engine grows linearly).
//! `cargo run --release -p bbrunner-core --example simulate_speed`; BENCHMARKS.md records the
//! figures.

use std::time::Instant;

use bbrunner_core::labels::Labels;
use bbrunner_core::scaling::{PolicyKind, PolicyMemory, Scaling};
use bbrunner_core::simulate::scenarios::long_trace;
use bbrunner_core::simulate::{SimConfig, StartLatency, TraceStep, simulate};

fn config(policy: PolicyKind, max: u32) -> SimConfig {
    SimConfig {
        labels: Labels::new::<_, &str>([]).expect("no custom labels"),
        scaling: Scaling {
            policy,
            max,
            ..Scaling::default()
        },
        start_latency: StartLatency::default(),
        seed: 1,
        api_budget: 900,
        history: PolicyMemory::default(),
        durations: Default::default(),
        webhooks: false,
        cold_start: Default::default(),
    }
}

fn main() {
    let steps = long_trace(30, 2000, 1);
    println!("trace: {} steps over 30 days", steps.len());
    for policy in PolicyKind::ALL {
        let started = Instant::now();
        let result = simulate(&steps, &config(policy, 100), &mut |_| {});
        let elapsed = started.elapsed();
        println!(
            "{:<16} {:>7.3} s  (p95 wait {:.0} s, peak {} runners)",
            policy.name(),
            elapsed.as_secs_f64(),
            result.p95_wait_s,
            result.peak_runners
        );
    }
    // Simultaneous steps: a minute each, all at once ten minutes in (the pool's first runner
    // is online by then), on the default pool (max 10); most time out in the queue after 2.5
    // hours.
    let mut before: Option<f64> = None;
    for n in [25_000, 50_000, 100_000, 200_000] {
        let burst = vec![
            TraceStep {
                at: 600.0,
                duration: 60.0,
                labels: vec!["self.hosted".into(), "linux".into()],
                size: Default::default(),
                pipeline: None,
            };
            n
        ];
        // The fastest of three: runs this short are at the mercy of the machine's noise.
        let elapsed = (0..3)
            .map(|_| {
                let started = Instant::now();
                simulate(&burst, &config(PolicyKind::IdleBuffer, 10), &mut |_| {});
                started.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        match before {
            Some(b) => println!(
                "{n:>7} at once  {elapsed:>7.3} s  ({:.1}x the half)",
                elapsed / b
            ),
            None => println!("{n:>7} at once  {elapsed:>7.3} s"),
        }
        before = Some(elapsed);
    }
}
