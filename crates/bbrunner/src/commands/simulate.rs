use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use bbrunner_core::labels::Labels;
use bbrunner_core::pool::PoolManifest;
use bbrunner_core::scaling::{PolicyKind, PolicyMemory, Scaling};
use bbrunner_core::simulate::{
    ColdStart, PolicyResult, Scenario, SimConfig, StartLatency, TraceStep, learn, parse_trace,
    simulate, split_weeks,
};
use bbrunner_core::units::parse_duration;

use crate::cli::{SimulateArgs, TableFormat};
use crate::{input, output};

#[derive(serde::Serialize)]
struct Report<'a> {
    policies: &'a [PolicyResult],
}

/// A policy to run, with an optional poll interval override, and whether Bitbucket's webhooks
/// reach it and it looks ahead through pipelines' definitions.
struct PolicyRun {
    kind: PolicyKind,
    poll: Option<f64>,
    webhooks: bool,
    lookahead: bool,
    label: String,
}

/// `NAME[:POLL][,webhooks][,no-lookahead]`.
fn parse_policy(raw: &str) -> Result<PolicyRun> {
    let mut parts = raw.split(',');
    let head = parts.next().unwrap_or_default();
    let (name, poll) = match head.split_once(':') {
        Some((n, p)) => (n, Some(parse_duration("--policy poll interval", p)?)),
        None => (head, None),
    };
    if let Some(poll) = poll
        && poll < 1.0
    {
        bail!("--policy {raw}: the poll interval is under 1s; poll at least a second apart");
    }
    let kind = PolicyKind::parse(name).ok_or_else(|| {
        anyhow!("--policy {name:?} is not a policy; use idle-buffer, queue or atlassian-ratio")
    })?;
    let (mut webhooks, mut lookahead) = (false, true);
    for option in parts {
        match option {
            "webhooks" => webhooks = true,
            "no-lookahead" => lookahead = false,
            other => bail!(
                "--policy {raw}: {other:?} is not an option; use webhooks or no-lookahead, as in queue:10s,webhooks"
            ),
        }
    }
    if kind == PolicyKind::AtlassianRatio && (webhooks || !lookahead) {
        bail!(
            "--policy {raw}: Atlassian's autoscaler reads neither webhooks nor pipeline definitions; drop the options"
        );
    }
    Ok(PolicyRun {
        kind,
        poll,
        webhooks,
        lookahead,
        label: raw.to_owned(),
    })
}

/// The measured workload and the history before it, a week per run: for a scenario,
/// `--history-weeks` earlier realizations of it (other seeds, the same day of the week); for a
/// trace, its first `--history-weeks` weeks, the rest measured (moved back by whole weeks, so
/// the time of week stays).
fn workload(args: &SimulateArgs) -> Result<(Vec<TraceStep>, Vec<Vec<TraceStep>>)> {
    let weeks = args.history_weeks.unwrap_or(if args.trace.is_some() {
        0
    } else {
        DEFAULT_HISTORY_WEEKS
    });
    if weeks > MAX_HISTORY_WEEKS {
        bail!(
            "--history-weeks {weeks} is more than {MAX_HISTORY_WEEKS}; a few weeks teach the forecast all it keeps"
        );
    }
    if let Some(path) = &args.trace {
        let (history, measured) = split_weeks(&trace(path)?, weeks);
        if measured.is_empty() && weeks > 0 {
            bail!(
                "--history-weeks {weeks}: {} has no step after its first {weeks} weeks to measure",
                path.display()
            );
        }
        return Ok((measured, history));
    }
    let name = args.scenario.as_deref().unwrap_or_default();
    let scenario = Scenario::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        anyhow!(
            "--scenario {name:?} is not built in; use one of {}",
            names.join(", ")
        )
    })?;
    let history = scenario.history(args.seed, weeks);
    Ok((scenario.generate(args.seed), history))
}

/// Weeks of history a scenario's pool has by default: the forecast's memory halves each
/// week, so four weeks weigh about as much as any longer past.
const DEFAULT_HISTORY_WEEKS: u32 = 4;
/// Bitbucket stops a step at two hours: a cold start cannot cost more.
const MAX_COLD_START: f64 = 7200.0;
const MAX_HISTORY_WEEKS: u32 = 52;

fn trace(path: &std::path::Path) -> Result<Vec<TraceStep>> {
    let text = input::read_text(Some(path))?;
    parse_trace(&text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow!("{} has bad lines:\n{}", path.display(), lines.join("\n"))
    })
}

/// The pool's labels, scaling and warm cache (`retain`, where it has one).
fn pool(args: &SimulateArgs) -> Result<(Labels, Scaling, Option<u32>)> {
    let Some(path) = &args.pool else {
        return Ok((Labels::new::<_, &str>([])?, Scaling::default(), None));
    };
    let text = input::read_yaml(path)?;
    // One document or several (as `migrate` writes): the first RunnerPool is simulated.
    let documents = input::yaml_documents(&text)
        .map_err(|e| anyhow!("{} is not YAML within budget: {e}", path.display()))?;
    let (index, document) = documents
        .into_iter()
        .enumerate()
        .find(|(_, d)| d["kind"] == "RunnerPool" || d.get("kind").is_none())
        .ok_or_else(|| {
            anyhow!(
                "{} holds no RunnerPool (a document with kind: RunnerPool)",
                path.display()
            )
        })?;
    let manifest: PoolManifest = serde_path_to_error::deserialize(document).map_err(|e| {
        anyhow!(
            "{} (document {}): {}: {}",
            path.display(),
            index + 1,
            e.path(),
            e.inner()
        )
    })?;
    let (labels, scaling) = manifest
        .spec
        .resolve()
        .with_context(|| format!("in {}", path.display()))?;
    let retain = manifest.spec.cache_retain(&scaling);
    Ok((labels, scaling, retain))
}

pub fn run(args: &SimulateArgs) -> Result<ExitCode> {
    #[cfg(feature = "plot")]
    if let Some(path) = &args.plot
        && !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        bail!(
            "--plot {} : the plot is SVG; name the file .svg (convert it to PNG with any SVG tool)",
            path.display()
        );
    }
    let (steps, history) = workload(args)?;
    let (labels, scaling, pool_retain) = pool(args)?;
    let mean = parse_duration("--start-latency", &args.start_latency)?;
    let cold_start_cost = parse_duration("--cold-start", &args.cold_start)?;
    if cold_start_cost > MAX_COLD_START {
        bail!(
            "--cold-start {}: more than Bitbucket's two-hour step limit; give what an empty Docker store costs a step, e.g. 90s",
            args.cold_start
        );
    }
    let cache_retain = args.cache_retain.or(pool_retain);
    let runs: Vec<PolicyRun> = if args.policies.is_empty() {
        PolicyKind::ALL
            .iter()
            .map(|k| PolicyRun {
                kind: *k,
                poll: None,
                webhooks: false,
                lookahead: true,
                label: k.name().to_owned(),
            })
            .collect()
    } else {
        args.policies
            .iter()
            .map(|p| parse_policy(p))
            .collect::<Result<_>>()?
    };
    if steps.is_empty() {
        bail!("the workload has no steps");
    }
    // The frontier: every one of the pool's max runners online all the time.
    let oracle_scaling = Scaling {
        min: scaling.max,
        min_idle: scaling.max,
        schedules: Vec::new(),
        ..scaling.clone()
    };
    let runs: Vec<(PolicyRun, Scaling)> = runs
        .into_iter()
        .map(|run| (run, scaling.clone()))
        .chain([(
            PolicyRun {
                kind: PolicyKind::IdleBuffer,
                poll: None,
                webhooks: false,
                lookahead: false,
                label: "oracle".to_owned(),
            },
            oracle_scaling,
        )])
        .collect();

    let show_progress = std::io::stderr().is_terminal();
    let mut results: Vec<PolicyResult> = Vec::new();
    for (run, scaling) in &runs {
        let mut scaling = Scaling {
            policy: run.kind,
            lookahead: scaling.lookahead && run.lookahead,
            ..scaling.clone()
        };
        if let Some(poll) = run.poll {
            match run.kind {
                PolicyKind::AtlassianRatio => scaling.atlassian.poll_interval = poll,
                _ => scaling.poll_interval = poll,
            }
        }
        let cold_start = ColdStart {
            cost: cold_start_cost,
            // Atlassian's autoscaler keeps no volumes; the oracle's runners never restart.
            cache_retain: cache_retain.filter(|_| run.kind != PolicyKind::AtlassianRatio),
        };
        let mut config = SimConfig {
            labels: labels.clone(),
            scaling,
            start_latency: StartLatency {
                mean,
                spread: mean / 3.0,
            },
            seed: args.seed,
            api_budget: bitbucket_budget(),
            history: PolicyMemory::default(),
            durations: Default::default(),
            webhooks: run.webhooks,
            cold_start,
        };
        // Only our policies learn: Atlassian's keeps no memory, and a pool whose min is its
        // max (the oracle) has nothing to ready.
        if run.kind != PolicyKind::AtlassianRatio && config.scaling.min < config.scaling.max {
            learn(&history, &mut config);
        }
        let mut progress = |share: f64| {
            if show_progress {
                eprint!("\rsimulating {}: {:>3.0}%", run.label, share * 100.0);
            }
        };
        let mut result = simulate(&steps, &config, &mut progress);
        if show_progress {
            eprintln!();
        }
        result.name = run.label.clone();
        results.push(result);
    }
    let oracle = results.last().cloned().expect("the oracle ran");
    let ratio = |ours: f64, theirs: f64| (theirs > 0.0).then(|| ours / theirs);
    for r in &mut results {
        r.p95_vs_oracle = ratio(r.p95_wait_s, oracle.p95_wait_s);
        r.idle_vs_oracle = ratio(r.idle_runner_hours, oracle.idle_runner_hours);
        r.pipeline_overhead_p95_vs_oracle = r
            .pipeline_overhead_p95_s
            .zip(oracle.pipeline_overhead_p95_s)
            .and_then(|(ours, theirs)| ratio(ours, theirs));
    }

    #[cfg(feature = "plot")]
    if let Some(path) = &args.plot {
        let workload = match (&args.trace, &args.scenario) {
            (Some(trace), _) => format!("trace {}", trace.display()),
            (None, Some(scenario)) => format!("scenario {scenario}"),
            (None, None) => "workload".to_owned(),
        };
        let title = crate::plot::Title {
            workload: &workload,
            seed: args.seed,
            min: scaling.min,
            max: scaling.max,
            min_idle: scaling.min_idle,
            start_latency_s: mean,
            history_weeks: history.len(),
        };
        crate::plot::write_svg(path, &title, &results)?;
    }
    for r in &results {
        for error in &r.errors {
            eprintln!("error: {}: {error}", r.name);
        }
    }
    let text = match args.format {
        TableFormat::Json => output::json(&Report { policies: &results })?,
        TableFormat::Table => table(&results, cold_start_cost > 0.0 || cache_retain.is_some()),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The request budget the operator's Bitbucket client keeps per identity and hour.
fn bitbucket_budget() -> u32 {
    900
}

/// The results as a table; `cold` adds the steps that ran on an empty store and the cache
/// volumes the pool held.
fn table(results: &[PolicyResult], cold: bool) -> String {
    // Pipeline columns only where the workload has pipelines.
    let pipelines = results.iter().any(|r| r.pipelines > 0);
    let mut out = format!(
        "{:<24} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>10} {:>11}",
        "policy",
        "steps",
        "failed",
        "p50 s",
        "p95 s",
        "p99 s",
        "max s",
        "idle h",
        "busy h",
        "peak",
        "API/h",
        "p95/oracle",
        "idle/oracle"
    );
    if pipelines {
        out.push_str(&format!(
            " {:>10} {:>10} {:>11}",
            "pipe p50 s", "pipe p95 s", "pipe/oracle"
        ));
    }
    if cold {
        out.push_str(&format!(" {:>6} {:>7}", "cold", "volumes"));
    }
    out.push('\n');
    let times = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into());
    let seconds = |s: Option<f64>| s.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
    for r in results {
        out.push_str(&format!(
            "{:<24} {:>6} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.2} {:>8.2} {:>5} {:>7.1} {:>10} {:>11}",
            // A policy whose result Bitbucket would not allow is marked.
            if r.errors.is_empty() {
                r.name.clone()
            } else {
                format!("{} (ERROR)", r.name)
            },
            r.steps,
            r.failed_steps,
            r.p50_wait_s,
            r.p95_wait_s,
            r.p99_wait_s,
            r.max_wait_s,
            r.idle_runner_hours,
            r.busy_runner_hours,
            r.peak_runners,
            r.api_calls_per_hour,
            times(r.p95_vs_oracle),
            times(r.idle_vs_oracle)
        ));
        if pipelines {
            out.push_str(&format!(
                " {:>10} {:>10} {:>11}",
                seconds(r.pipeline_overhead_p50_s),
                seconds(r.pipeline_overhead_p95_s),
                times(r.pipeline_overhead_p95_vs_oracle)
            ));
        }
        if cold {
            out.push_str(&format!(" {:>6} {:>7}", r.cold_steps, r.cache_volumes_peak));
        }
        out.push('\n');
    }
    out
}
