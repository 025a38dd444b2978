use super::*;
use crate::labels::Labels;
use crate::scaling::{PolicyKind, PolicyMemory, Scaling};

fn step(at: f64, duration: f64) -> TraceStep {
    TraceStep {
        at,
        duration,
        labels: vec!["self.hosted".into(), "linux".into()],
        size: RunnerSize::X1,
        pipeline: None,
    }
}

fn config(scaling: Scaling) -> SimConfig {
    SimConfig {
        labels: Labels::new::<_, &str>([]).unwrap(),
        scaling,
        start_latency: StartLatency {
            mean: 45.0,
            spread: 0.0,
        },
        seed: 7,
        api_budget: 900,
        history: PolicyMemory::default(),
        durations: Default::default(),
        webhooks: false,
        cold_start: Default::default(),
    }
}

#[test]
fn a_small_trace_gives_the_waits_computed_by_hand() {
    // One runner (min = max = 1), online at 0, polling at 0, 30, 60, ...
    // A arrives at 10 and starts at the next poll, 30 (wait 20), running to 130.
    // B arrives at 20; the runner polls again as soon as A finishes: B starts at 130 (wait 110).
    let scaling = Scaling {
        min: 1,
        max: 1,
        min_idle: 0,
        ..Scaling::default()
    };
    let r = simulate(
        &[step(10.0, 100.0), step(20.0, 50.0)],
        &config(scaling),
        &mut |_| {},
    );
    assert_eq!(r.steps, 2);
    assert_eq!(r.failed_steps, 0);
    assert_eq!(r.p50_wait_s, 20.0);
    assert_eq!(r.p95_wait_s, 110.0);
    assert_eq!(r.max_wait_s, 110.0);
    assert_eq!(r.peak_runners, 1);
    // Horizon: last end (110) + 1 h = 3710 s; busy 150 s of it.
    assert!((r.busy_runner_hours - 150.0 / 3600.0).abs() < 1e-9);
    assert!((r.idle_runner_hours - 3560.0 / 3600.0).abs() < 1e-9);
    // One list call per 15 s poll, at 0, 15, ..., 3705: 248 calls in 3710 s.
    assert!((r.api_calls_per_hour - 248.0 / (3710.0 / 3600.0)).abs() < 1e-9);
}

#[test]
fn steps_that_timed_out_leave_the_queue_for_those_behind_them() {
    // One runner, an hour per step: of 200 steps queued at 10, three start (at 30, 3630 and
    // 7230) and the rest time out at 9010. A step arriving at 9500 is next when the runner
    // frees up at 10830, not behind the ones that timed out.
    let scaling = Scaling {
        min: 1,
        max: 1,
        min_idle: 0,
        ..Scaling::default()
    };
    let mut steps: Vec<TraceStep> = (0..200).map(|_| step(10.0, 3600.0)).collect();
    steps.push(step(9500.0, 60.0));
    let r = simulate(&steps, &config(scaling), &mut |_| {});
    assert_eq!(r.failed_steps, 197);
    assert_eq!(r.waits, [20.0, 10830.0 - 9500.0, 3620.0, 7220.0]);
    // The queue as sampled: 199 waiting after the first start, none once the rest timed out
    // (until the late step), one while the late step waits.
    let queued_at = |t: f64| {
        r.timeline
            .iter()
            .rev()
            .find(|s| s.t <= t)
            .map(|s| s.queued)
            .unwrap()
    };
    assert_eq!(queued_at(1000.0), 199);
    assert_eq!(queued_at(9400.0), 0);
    assert_eq!(queued_at(10000.0), 1);
}

#[test]
fn scaling_up_counts_start_latency_and_the_first_poll() {
    // min 1, minIdle 1. At 0 the policy sees one idle runner and wants 1; that runner takes A
    // at its poll at 0 (wait 0). B arrives at 5. The policy poll at 15 sees 1 busy, wants 2 and
    // creates one, ready at 60, which polls at once and takes B (wait 55). At 60 the policy sees
    // 2 busy and creates a third.
    let scaling = Scaling {
        min: 1,
        max: 3,
        min_idle: 1,
        ..Scaling::default()
    };
    let r = simulate(
        &[step(0.0, 600.0), step(5.0, 600.0)],
        &config(scaling),
        &mut |_| {},
    );
    assert_eq!(r.failed_steps, 0);
    assert_eq!(r.p50_wait_s, 0.0);
    assert_eq!(r.max_wait_s, 55.0);
    assert_eq!(r.peak_runners, 3);
}

#[test]
fn steps_no_runner_can_serve_fail_at_once() {
    let mut gpu = step(10.0, 10.0);
    gpu.labels.push("gpu".into());
    let r = simulate(
        &[gpu, step(20.0, 10.0)],
        &config(Scaling::default()),
        &mut |_| {},
    );
    assert_eq!(r.failed_steps, 1);
    // With no runner at all (min 0, Atlassian cannot scale from zero), every step fails.
    let zero = Scaling {
        min: 0,
        policy: PolicyKind::AtlassianRatio,
        ..Scaling::default()
    };
    let r = simulate(&[step(10.0, 10.0)], &config(zero), &mut |_| {});
    assert_eq!(r.failed_steps, 1);
}

#[test]
fn same_seed_same_figures_and_another_seed_differs() {
    let trace = Scenario::Workday.generate(1);
    assert_eq!(trace, Scenario::Workday.generate(1));
    assert_ne!(trace, Scenario::Workday.generate(2));
    for policy in PolicyKind::ALL {
        let mut c = config(Scaling {
            policy,
            ..Scaling::default()
        });
        c.start_latency.spread = 15.0;
        let a = simulate(&trace, &c, &mut |_| {});
        let b = simulate(&trace, &c, &mut |_| {});
        assert_eq!(a, b, "{policy}");
    }
}

#[test]
fn the_queue_policy_stays_within_the_api_budget() {
    let trace = Scenario::Workday.generate(1);
    let mut c = config(Scaling {
        policy: PolicyKind::Queue,
        ..Scaling::default()
    });
    c.api_budget = 500;
    let r = simulate(&trace, &c, &mut |_| {});
    assert!(r.api_calls_per_hour <= 500.0, "{}", r.api_calls_per_hour);
}

#[test]
fn progress_is_reported_up_to_done() {
    let mut seen = Vec::new();
    simulate(
        &Scenario::Steady.generate(3),
        &config(Scaling::default()),
        &mut |p| seen.push(p),
    );
    assert!(seen.len() > 10);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(seen.last(), Some(&1.0));
}

#[test]
fn our_policies_never_exceed_max_while_atlassian_can() {
    let trace = Scenario::Burst.generate(5);
    for policy in [PolicyKind::IdleBuffer, PolicyKind::Queue] {
        let r = simulate(
            &trace,
            &config(Scaling {
                policy,
                ..Scaling::default()
            }),
            &mut |_| {},
        );
        assert!(r.peak_runners <= 10, "{policy}: {}", r.peak_runners);
        assert_eq!(r.failed_steps, 0, "{policy}");
    }
}

#[test]
fn trace_lines_parse_and_bad_lines_are_numbered() {
    let good = "{\"at\": 5, \"duration\": 60, \"labels\": [\"self.hosted\", \"linux\"], \"size\": \"2x\"}\n\n# comment\n{\"at\": 1, \"duration\": 2}\n";
    let steps = parse_trace(good).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].at, 1.0);
    assert_eq!(steps[1].size, RunnerSize::X2);

    let bad = "{\"at\": 1, \"duration\": 2}\nnot json\n{\"at\": -1, \"duration\": 2}\n{\"at\": 1, \"duration\": 2, \"size\": \"64x\"}\n{\"at\": 1, \"duration\": 2, \"labels\": [\"Bad\"]}\n{\"at\": 1, \"duration\": 2, \"extra\": 1}";
    let errors = parse_trace(bad).unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6]);
    assert!(errors[1].to_string().starts_with("trace line 3: \"at\""));
    assert!(errors[2].to_string().contains("64x"));
}

#[test]
fn the_simulation_epoch_is_a_monday_midnight() {
    let t = jiff::Timestamp::from_second(engine::SIM_EPOCH as i64).unwrap();
    let dt = t.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    assert_eq!(dt.weekday(), jiff::civil::Weekday::Monday);
    assert_eq!((dt.hour(), dt.minute()), (0, 0));
}

#[test]
fn a_schedule_window_raises_the_floor_in_the_simulation() {
    let schedule = crate::schedule::ScheduleSpec {
        cron: "0 1 * * *".into(),
        duration: "1h".into(),
        min: Some(5),
        min_idle: None,
    };
    let scaling = Scaling {
        schedules: vec![schedule.resolve(0).unwrap()],
        ..Scaling::default()
    };
    let r = simulate(
        &[step(0.0, 10.0), step(3.0 * 3600.0, 10.0)],
        &config(scaling),
        &mut |_| {},
    );
    assert_eq!(r.peak_runners, 5);
    let during = r.timeline.iter().find(|s| s.t > 1.5 * 3600.0).unwrap();
    assert_eq!(during.online, 5);
}

proptest::proptest! {
    #[test]
    fn the_trace_reader_never_panics(text in "(\\{\"at\": ?-?[0-9.e]{0,6}, ?\"duration\": ?[0-9a-z.\"]{0,6}(, ?\"labels\": ?\\[\"[A-Za-z.]{0,8}\"\\])?(, ?\"size\": ?\"[0-9x]{0,3}\")?\\}\n|\\PC{0,40}\n){0,20}") {
        if let Err(errors) = parse_trace(&text) {
            let lines = text.lines().count();
            for e in errors {
                proptest::prop_assert!(e.line >= 1 && e.line <= lines);
            }
        }
    }
}

#[test]
fn a_pool_that_saw_a_nightly_batch_before_has_runners_ready_for_it() {
    // Eight 20-minute jobs at 02:00 (within eight seconds) on a pool with one warm runner.
    let batch: Vec<TraceStep> = (0..8)
        .map(|i| step(2.0 * 3600.0 + f64::from(i), 1200.0))
        .collect();
    let one_warm = Scaling {
        min_idle: 1,
        ..Scaling::default()
    };
    let cold = simulate(&batch, &config(one_warm.clone()), &mut |_| {});
    let mut warm_config = config(one_warm);
    warm_config.history = cold.learned;
    let warm = simulate(&batch, &warm_config, &mut |_| {});
    // Waits are sorted: the seventh is the longest of all but one.
    assert!(
        cold.waits[6] > 45.0,
        "a cold pool waits for starts: {:?}",
        cold.waits
    );
    assert!(
        warm.waits[6] < 30.0,
        "a week later seven of eight (four fifths of the peak, rounded up) found a runner ready: {:?}",
        warm.waits
    );
    assert_eq!(warm.failed_steps, 0);
}

#[test]
fn a_trace_splits_into_weeks_that_keep_their_time_of_week() {
    let week = 7.0 * 86_400.0;
    let trace = [
        step(10.0, 60.0),
        step(week + 20.0, 60.0),
        step(2.0 * week + 30.0, 60.0),
    ];
    let (history, rest) = split_weeks(&trace, 2);
    let ats = |steps: &[TraceStep]| steps.iter().map(|s| s.at).collect::<Vec<_>>();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (ats(&history[0]), ats(&history[1])),
        (vec![10.0], vec![20.0])
    );
    assert_eq!(ats(&rest), vec![30.0]);
    let (none, all) = split_weeks(&trace, 0);
    assert!(none.is_empty());
    assert_eq!(all.len(), 3);
}

#[test]
fn pipeline_lines_expand_into_stages_and_bad_ones_are_named() {
    let text = r#"{"at": 5, "repository": "app", "pipeline": [[{"name": "build", "duration": 60}], [{"name": "a", "duration": 30, "labels": ["self.hosted", "linux", "test"]}, {"name": "b", "duration": 40, "size": "2x"}]]}
{"at": 1, "duration": 10}
"#;
    let steps = parse_trace(text).unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(
        steps[0].pipeline, None,
        "sorted by arrival: the step line first"
    );
    let stages: Vec<(u32, &str)> = steps[1..]
        .iter()
        .map(|s| {
            let p = s.pipeline.as_ref().unwrap();
            (p.stage, p.name.as_str())
        })
        .collect();
    assert_eq!(stages, [(0, "build"), (1, "a"), (1, "b")]);
    assert_eq!(steps[3].size, RunnerSize::X2);

    let many: Vec<String> = (0..101)
        .map(|i| format!(r#"{{"name": "s{i}", "duration": 1}}"#))
        .collect();
    let bad = format!(
        "{}\n{}\n{}\n{}\n",
        r#"{"at": 0, "repository": "app", "pipeline": [[]]}"#,
        r#"{"at": 0, "repository": "app", "pipeline": [[{"name": " ", "duration": 1}]]}"#,
        format_args!(
            r#"{{"at": 0, "repository": "app", "pipeline": [[{}]]}}"#,
            many.join(",")
        ),
        r#"{"at": 0, "repository": "app", "pipeline": [[{"name": "x", "duration": -1}]]}"#,
    );
    let errors = parse_trace(&bad).unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 2, 3, 4]);
    assert!(errors[0].message.contains("at least one step"));
    assert!(errors[1].message.contains("\"name\""));
    assert!(errors[2].message.contains("at most 100"));
    assert!(errors[3].message.contains("step \"x\""));
}

/// A pipeline pushed at `at`, its stages' steps as (name, duration).
fn pipeline_of(id: u32, at: f64, stages: &[&[(&str, f64)]]) -> Vec<TraceStep> {
    let mut out = Vec::new();
    for (stage, steps) in stages.iter().enumerate() {
        for (name, duration) in *steps {
            out.push(TraceStep {
                pipeline: Some(PipelineStep {
                    id,
                    stage: stage as u32,
                    repository: "app".into(),
                    name: (*name).into(),
                }),
                ..step(at, *duration)
            });
        }
    }
    out
}

/// build (100 s) → two tests (50 s and 80 s) → deploy (20 s), pushed at `at`.
fn pipeline(id: u32, at: f64) -> Vec<TraceStep> {
    pipeline_of(
        id,
        at,
        &[
            &[("build", 100.0)],
            &[("unit", 50.0), ("e2e", 80.0)],
            &[("deploy", 20.0)],
        ],
    )
}

#[test]
fn stages_run_in_order_and_waiting_delays_what_follows() {
    // Always two runners ready: the build at 0–100 on one; the tests queue at 100, one taken
    // at once by the runner that ran the build (it polls as it finishes), the other at the
    // idle runner's next poll, 120; the deploy 200–220. 20 s over the critical path.
    let warm = Scaling {
        min: 2,
        max: 2,
        min_idle: 2,
        ..Scaling::default()
    };
    let r = simulate(&pipeline(0, 0.0), &config(warm.clone()), &mut |_| {});
    assert_eq!(r.pipelines, 1);
    assert_eq!(r.steps, 4);
    assert_eq!(r.pipeline_overhead_p50_s, Some(20.0));
    // One runner: the tests run one after the other, 50 s more than the critical path.
    let one = Scaling {
        min: 1,
        max: 1,
        min_idle: 1,
        ..warm
    };
    let r = simulate(&pipeline(0, 0.0), &config(one), &mut |_| {});
    assert_eq!(r.pipeline_overhead_p50_s, Some(50.0));
}

#[test]
fn a_failed_step_skips_the_rest_of_its_pipeline() {
    // No runner serves the build's labels: it fails at once, and nothing after it runs.
    let mut steps = pipeline(0, 0.0);
    steps[0].labels = vec!["self.hosted".into(), "linux".into(), "gpu".into()];
    let r = simulate(&steps, &config(Scaling::default()), &mut |_| {});
    assert_eq!((r.failed_steps, r.skipped_steps), (1, 3));
    assert_eq!(r.pipelines, 1);
    assert_eq!(r.pipeline_overhead_p95_s, None, "no pipeline completed");
}

#[test]
fn webhooks_and_lookahead_ready_the_next_stage_before_it_queues() {
    // build (300 s) → four tests → deploy, an hour apart. A pool that keeps one runner idle
    // has two when the tests queue; the lookahead knows when the build will end and starts
    // the other two before it does.
    let fan_out = |id: u32, at: f64| {
        pipeline_of(
            id,
            at,
            &[
                &[("build", 300.0)],
                &[("a", 60.0), ("b", 60.0), ("c", 60.0), ("d", 60.0)],
                &[("deploy", 30.0)],
            ],
        )
    };
    let steps: Vec<TraceStep> = (0..6)
        .flat_map(|i| fan_out(i, f64::from(i) * 3600.0))
        .collect();
    let scaling = Scaling {
        min: 1,
        max: 6,
        min_idle: 1,
        ..Scaling::default()
    };
    let run = |webhooks: bool, lookahead: bool| {
        let mut c = config(Scaling {
            lookahead,
            ..scaling.clone()
        });
        c.webhooks = webhooks;
        learn(&[fan_out(0, 0.0)], &mut c);
        assert_eq!(c.durations.expected("app", "build"), Some(300.0));
        simulate(&steps, &c, &mut |_| {})
    };
    let blind = run(false, true);
    let ahead = run(true, true);
    let no_lookahead = run(true, false);
    let overhead = |r: &PolicyResult| r.pipeline_overhead_p95_s.unwrap();
    assert!(
        overhead(&ahead) + 30.0 < overhead(&blind),
        "{} vs {}",
        overhead(&ahead),
        overhead(&blind)
    );
    // Webhooks alone, without the lookahead, change nothing.
    assert_eq!(overhead(&no_lookahead), overhead(&blind));
    // Reading definitions, learning durations and the runners readied ahead cost calls, few
    // of them (the extra runners' registrations and removals are most).
    assert!(ahead.api_calls_per_hour > blind.api_calls_per_hour);
    assert!(
        ahead.api_calls_per_hour < blind.api_calls_per_hour + 20.0,
        "{} vs {}",
        ahead.api_calls_per_hour,
        blind.api_calls_per_hour
    );
}

/// Two bursts of `n` steps an hour apart: the pool grows for the first, shrinks to its
/// minimum in the quiet, and grows again for the second.
fn two_bursts(n: usize) -> Vec<TraceStep> {
    (0..2)
        .flat_map(|wave| (0..n).map(move |_| step(f64::from(wave) * 3600.0, 300.0)))
        .collect()
}

fn bursting_pool() -> Scaling {
    Scaling {
        min: 1,
        max: 6,
        min_idle: 0,
        policy: PolicyKind::Queue,
        ..Scaling::default()
    }
}

fn with_cold_start(cost: f64, cache_retain: Option<u32>) -> SimConfig {
    SimConfig {
        cold_start: ColdStart { cost, cache_retain },
        ..config(bursting_pool())
    }
}

#[test]
fn without_a_cache_every_new_runner_starts_cold_and_its_first_step_pays_for_it() {
    let steps = two_bursts(6);
    let warm = simulate(&steps, &with_cold_start(0.0, None), &mut |_| {});
    let cold = simulate(&steps, &with_cold_start(120.0, None), &mut |_| {});
    // The runner online from the start is warm; each one created runs a cold first step.
    assert_eq!(warm.runners_created, 10, "five new runners per burst");
    assert_eq!(cold.runners_created, 10);
    assert_eq!(cold.cold_steps, 10);
    assert_eq!(cold.cache_volumes_peak, 0);
    // Each cold step ran two minutes longer.
    let extra = cold.busy_runner_hours - warm.busy_runner_hours;
    assert!((extra - 10.0 * 120.0 / 3600.0).abs() < 1e-9, "{extra}");
}

#[test]
fn a_cache_hands_the_first_bursts_volumes_to_the_second_bursts_runners() {
    let steps = two_bursts(6);
    let cached = simulate(&steps, &with_cold_start(120.0, Some(6)), &mut |_| {});
    assert_eq!(cached.runners_created, 10);
    // The five volumes made for the first burst come back warm for the second.
    assert_eq!(cached.cold_steps, 5);
    assert_eq!(
        cached.cache_volumes_peak, 6,
        "the first runner's and five more"
    );
    // Keeping two: the second burst finds two warm volumes and makes three cold ones.
    let two = simulate(&steps, &with_cold_start(120.0, Some(2)), &mut |_| {});
    assert_eq!(two.cold_steps, 5 + 4);
    // Keeping none the volumes go once free for the scale-down delay: as cold as no cache.
    let none = simulate(&steps, &with_cold_start(120.0, Some(0)), &mut |_| {});
    assert_eq!(none.cold_steps, 10);
}

#[test]
fn a_volume_freed_within_the_scale_down_delay_is_taken_warm_even_beyond_retain() {
    // Runners idle from 300 s go after the 2000 s delay; their volumes would go 2000 s
    // later, after the second burst (3600 s) has taken them.
    let steps = two_bursts(6);
    let slow = SimConfig {
        scaling: Scaling {
            scale_down_delay: 2000.0,
            ..bursting_pool()
        },
        ..with_cold_start(120.0, Some(0))
    };
    let r = simulate(&steps, &slow, &mut |_| {});
    assert_eq!(
        r.runners_created, 10,
        "the first burst's runners were replaced"
    );
    assert_eq!(r.cold_steps, 5);
}
