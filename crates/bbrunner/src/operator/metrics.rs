//! Prometheus metrics, served on `/metrics` with `/healthz` and `/readyz`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bbrunner_core::reason::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerStateLabels {
    pub namespace: String,
    pub pool: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub namespace: String,
    pub pool: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DegradedLabels {
    namespace: String,
    pool: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// One of the events bbrunner reads, or `other`.
    pub event: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// `identity` is [`bitbucket::Credentials::opaque_id`]: no e-mail or username in metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub identity: String,
}

/// The states of the cache series, for removing a pool's.
const CACHE_STATES: &[&str] = &["in-use", "warm", "cold", "skipped", "terminating"];

pub struct Metrics {
    /// The runner states `runners` is reported in.
    pub runners: Family<RunnerStateLabels, Gauge>,
    pub desired: Family<PoolLabels, Gauge>,
    /// Runners made from an earlier spec, not yet replaced.
    pub outdated: Family<PoolLabels, Gauge>,
    /// Seconds between a pool's polls: its own interval, or its identity's fair share.
    pub poll_interval: Family<PoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    pub bitbucket_requests: Family<RequestLabels, Counter>,
    pub bitbucket_request_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    pub budget_remaining: Family<IdentityLabels, Gauge>,
    pub step_queue_wait: Family<PoolLabels, Histogram, fn() -> Histogram>,
    /// Runners a pool readies for the stages ahead of pipelines under way.
    pub runners_ahead: Family<PoolLabels, Gauge>,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    /// A pool's cache claims by state: in-use, warm, cold, terminating.
    pub cache_volumes: Family<RunnerStateLabels, Gauge>,
    /// Runner pods started on a cache claim, by its temperature: warm (used before), cold.
    cache_starts: Family<RunnerStateLabels, Counter>,
    definition_errors: Family<ReasonLabels, Counter>,
    pub leader: Gauge,
    /// One series per pool: 1 with its reason while Degraded, 0 with an empty reason while not.
    pool_degraded: Family<DegradedLabels, Gauge>,
    degraded_reasons: Mutex<HashMap<PoolLabels, String>>,
    registry: Registry,
    ready: AtomicBool,
    /// Error series created per pool, so that they can go with the pool.
    error_series: Mutex<HashSet<ErrorLabels>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("bbrunner");
        let runners = Family::<RunnerStateLabels, Gauge>::default();
        let desired = Family::<PoolLabels, Gauge>::default();
        let outdated = Family::<PoolLabels, Gauge>::default();
        let poll_interval =
            Family::<PoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let bitbucket_requests = Family::<RequestLabels, Counter>::default();
        let bitbucket_request_duration: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 12)));
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                // Set by ./scripts/image; a plain cargo build does not know its commit.
                revision: option_env!("BBRUNNER_REVISION")
                    .unwrap_or("unknown")
                    .to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The operator's version and source revision; always 1",
            build_info,
        );
        let budget_remaining = Family::<IdentityLabels, Gauge>::default();
        let leader = Gauge::default();
        let step_queue_wait: Family<PoolLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(5.0, 2.0, 10)));
        registry.register("runners", "Runners of a pool by state", runners.clone());
        registry.register(
            "desired_runners",
            "Runners a pool's policy wants",
            desired.clone(),
        );
        registry.register(
            "runners_outdated",
            "Runners of a pool made from an earlier spec (labels or pod template), not yet replaced",
            outdated.clone(),
        );
        registry.register_with_unit(
            "poll_interval",
            "Time between a pool's polls of Bitbucket: its pollInterval, or its identity's fair share of the request budget",
            Unit::Seconds,
            poll_interval.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time to reconcile one pool",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "bitbucket_requests",
            "Bitbucket API requests by endpoint and HTTP status (0: no answer)",
            bitbucket_requests.clone(),
        );
        registry.register_with_unit(
            "bitbucket_request_duration",
            "Time from sending a Bitbucket API request to its answer's headers, by endpoint",
            Unit::Seconds,
            bitbucket_request_duration.clone(),
        );
        registry.register_with_unit(
            "bitbucket_budget_remaining",
            "Requests left in the hourly budget of a Bitbucket identity",
            Unit::Other("requests".to_owned()),
            budget_remaining.clone(),
        );
        let cache_volumes = Family::<RunnerStateLabels, Gauge>::default();
        registry.register(
            "cache_volumes",
            "A pool's Docker cache claims by state: in-use, warm (free, used before), cold (free, never used), skipped (a pod could not be scheduled with it), terminating",
            cache_volumes.clone(),
        );
        let cache_starts = Family::<RunnerStateLabels, Counter>::default();
        registry.register(
            "cache_starts",
            "Runner pods started on a cache claim, by state: warm (the claim was used before) or cold",
            cache_starts.clone(),
        );
        let pool_degraded = Family::<DegradedLabels, Gauge>::default();
        registry.register(
            "pool_degraded",
            "1 while a pool's Degraded condition is true, with its reason",
            pool_degraded.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance holds the leader lease",
            leader.clone(),
        );
        registry.register_with_unit(
            "step_queue_wait",
            "Queue wait of steps as the operator observed them (repository pools with the queue policy; to the poll interval)",
            Unit::Seconds,
            step_queue_wait.clone(),
        );
        let runners_ahead = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "runners_ahead",
            "Runners a pool readies for the next stages of pipelines under way (lookahead)",
            runners_ahead.clone(),
        );
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries received, by event and outcome (accepted, known, duplicate, replayed, stale, unsigned, bad_signature, too_large, malformed, unknown_event, rate_limited)",
            webhook_deliveries.clone(),
        );
        let definition_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "lookahead_definition_errors",
            "bitbucket-pipelines.yml files the lookahead could not use, by reason (unreadable, unparsable, too_many_steps)",
            definition_errors.clone(),
        );
        Arc::new(Self {
            runners,
            desired,
            outdated,
            poll_interval,
            reconcile_duration,
            reconcile_errors,
            bitbucket_requests,
            bitbucket_request_duration,
            budget_remaining,
            step_queue_wait,
            runners_ahead,
            cache_volumes,
            cache_starts,
            webhook_deliveries,
            definition_errors,
            leader,
            pool_degraded,
            degraded_reasons: Mutex::new(HashMap::new()),
            registry,
            ready: AtomicBool::new(false),
            error_series: Mutex::new(HashSet::new()),
        })
    }

    pub fn count_definition_error(&self, reason: &str) {
        self.definition_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn count_error(&self, labels: ErrorLabels) {
        self.reconcile_errors.get_or_create(&labels).inc();
        self.error_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels);
    }

    /// Show a pool Degraded for `reason` (1, with the reason), or not Degraded (0, with an
    /// empty reason: a healthy pool has a series too, so that a dashboard shows it).
    pub fn set_degraded(&self, namespace: &str, pool: &str, reason: Option<Reason>) {
        let key = PoolLabels {
            namespace: namespace.to_owned(),
            pool: pool.to_owned(),
        };
        let mut reasons = self
            .degraded_reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = reasons.remove(&key) {
            self.pool_degraded.remove(&DegradedLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                reason: previous,
            });
        }
        let shown = reason.map_or("", Reason::as_str);
        self.pool_degraded
            .get_or_create(&DegradedLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                reason: shown.to_owned(),
            })
            .set(i64::from(reason.is_some()));
        reasons.insert(key, shown.to_owned());
    }

    /// Forget a pool's Degraded series.
    fn forget_degraded(&self, namespace: &str, pool: &str) {
        let key = PoolLabels {
            namespace: namespace.to_owned(),
            pool: pool.to_owned(),
        };
        let previous = self
            .degraded_reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(previous) = previous {
            self.pool_degraded.remove(&DegradedLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                reason: previous,
            });
        }
    }

    /// A runner pod started on a cache claim.
    pub fn count_cache_start(&self, namespace: &str, pool: &str, warm: bool) {
        self.cache_starts
            .get_or_create(&RunnerStateLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                state: if warm { "warm" } else { "cold" }.to_owned(),
            })
            .inc();
    }

    /// A pool's cache claims by state. Its start counters exist from then on, at zero until
    /// a start, so that a ratio of warm to all starts has both series.
    pub fn set_cache_volumes(
        &self,
        namespace: &str,
        pool: &str,
        counts: bbrunner_core::cache::CacheCounts,
    ) {
        for state in ["warm", "cold"] {
            // Created, not counted.
            let _series = self.cache_starts.get_or_create(&RunnerStateLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                state: state.to_owned(),
            });
        }
        for (state, n) in [
            ("in-use", counts.in_use),
            ("warm", counts.warm),
            ("cold", counts.cold),
            ("skipped", counts.skipped),
            ("terminating", counts.terminating),
        ] {
            self.cache_volumes
                .get_or_create(&RunnerStateLabels {
                    namespace: namespace.to_owned(),
                    pool: pool.to_owned(),
                    state: state.to_owned(),
                })
                .set(i64::from(n));
        }
    }

    /// Remove every series of a pool that is gone, so that dashboards stop showing it.
    pub fn forget_pool(&self, namespace: &str, pool: &str) {
        self.forget_degraded(namespace, pool);
        let labels = PoolLabels {
            namespace: namespace.to_owned(),
            pool: pool.to_owned(),
        };
        for (state, _) in bbrunner_core::plan::Counts::default().disjoint() {
            self.runners.remove(&RunnerStateLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                state: state.to_owned(),
            });
        }
        self.desired.remove(&labels);
        self.outdated.remove(&labels);
        self.poll_interval.remove(&labels);
        self.step_queue_wait.remove(&labels);
        self.runners_ahead.remove(&labels);
        for state in CACHE_STATES {
            let series = RunnerStateLabels {
                namespace: namespace.to_owned(),
                pool: pool.to_owned(),
                state: (*state).to_owned(),
            };
            self.cache_volumes.remove(&series);
            self.cache_starts.remove(&series);
        }
        self.error_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|e| {
                let ours = e.namespace == namespace && e.pool == pool;
                if ours {
                    self.reconcile_errors.remove(e);
                }
                !ours
            });
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

/// OpenMetrics to scrapers that ask for it (Prometheus does), the classic text format to the
/// rest (`curl | promtool check metrics`, older agents).
async fn serve_metrics(
    State(metrics): State<Arc<Metrics>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = metrics.encode();
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            classic_text(&text),
        )
    }
}

/// The classic text format of an OpenMetrics exposition: a counter's family takes its
/// samples' `_total` name, and `# UNIT` and `# EOF` go (the classic format has neither).
fn classic_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_shows_one_degraded_reason_at_a_time_zero_while_healthy_and_none_once_gone() {
        let metrics = Metrics::new();
        metrics.set_degraded("ci", "builds", Some(Reason::CredentialsInvalid));
        metrics.set_degraded("ci", "builds", Some(Reason::RateLimited));
        metrics.set_degraded("ci", "other", Some(Reason::RateLimited));
        let text = metrics.encode();
        assert!(text.contains(
            r#"bbrunner_pool_degraded{namespace="ci",pool="builds",reason="RateLimited"} 1"#
        ));
        assert!(!text.contains("CredentialsInvalid"), "{text}");
        // A healthy pool shows 0, so that the dashboard's panel has data.
        metrics.set_degraded("ci", "builds", None);
        let text = metrics.encode();
        assert!(
            text.contains(r#"bbrunner_pool_degraded{namespace="ci",pool="builds",reason=""} 0"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"pool="builds",reason="RateLimited""#),
            "{text}"
        );
        metrics.forget_pool("ci", "builds");
        metrics.forget_pool("ci", "other");
        let text = metrics.encode();
        assert!(!text.contains("bbrunner_pool_degraded{"), "{text}");
    }

    #[test]
    fn the_classic_text_names_counter_families_by_their_samples() {
        let metrics = Metrics::new();
        metrics.count_error(ErrorLabels {
            namespace: "ci".into(),
            pool: "builds".into(),
            reason: "RateLimited".into(),
        });
        metrics.reconcile_duration.observe(0.1);
        let classic = classic_text(&metrics.encode());
        assert!(classic.contains("# TYPE bbrunner_reconcile_errors_total counter\n"));
        assert!(classic.contains("# HELP bbrunner_reconcile_errors_total Failed reconciles"));
        assert!(classic.contains("bbrunner_reconcile_errors_total{namespace=\"ci\""));
        assert!(classic.contains("# TYPE bbrunner_reconcile_duration_seconds histogram\n"));
        assert!(
            !classic.contains("# UNIT") && !classic.contains("# EOF"),
            "{classic}"
        );
    }
}
