//! Benchmark: simulate a 30-day trace of 2,000 steps a day under each policy and print the
//! wall time of each run (one thread). `cargo run --release -p bbrunner-core --example
//! simulate_speed`; BENCHMARKS.md records the figures.

use std::time::Instant;

use bbrunner_core::labels::Labels;
use bbrunner_core::scaling::{PolicyKind, PolicyMemory, Scaling};
use bbrunner_core::simulate::scenarios::long_trace;
use bbrunner_core::simulate::{SimConfig, StartLatency, simulate};

fn main() {
    let steps = long_trace(30, 2000, 1);
    println!("trace: {} steps over 30 days", steps.len());
    for policy in PolicyKind::ALL {
        let config = SimConfig {
            labels: Labels::new::<_, &str>([]).expect("no custom labels"),
            scaling: Scaling {
                policy,
                max: 100,
                ..Scaling::default()
            },
            start_latency: StartLatency::default(),
            seed: 1,
            api_budget: 900,
            history: PolicyMemory::default(),
            durations: Default::default(),
            webhooks: false,
        };
        let started = Instant::now();
        let result = simulate(&steps, &config, &mut |_| {});
        let elapsed = started.elapsed();
        println!(
            "{:<16} {:>7.3} s  (p95 wait {:.0} s, peak {} runners)",
            policy.name(),
            elapsed.as_secs_f64(),
            result.p95_wait_s,
            result.peak_runners
        );
    }
}
