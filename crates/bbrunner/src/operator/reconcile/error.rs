//! Why a reconcile could not finish: each failure with the condition reason it reports and
//! when to retry.

use std::time::Duration;

use bitbucket::Error as BitbucketError;

use super::*;

/// Why a reconcile could not finish, with the condition reason it reports.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{message}")]
    Degraded {
        reason: Reason,
        message: String,
        retry: Duration,
    },
}

impl ReconcileError {
    pub fn reason(&self) -> Reason {
        match self {
            Self::Kube(_) => Reason::KubernetesApi,
            Self::Degraded { reason, .. } => *reason,
        }
    }

    pub fn retry(&self) -> Duration {
        match self {
            Self::Degraded { retry, .. } => *retry,
            _ => Duration::from_secs(5),
        }
    }
}

/// Reconciles of each pool that failed in a row, for the backoff.
#[derive(Default)]
pub struct Failures(std::sync::Mutex<std::collections::HashMap<(String, String), u32>>);

impl Failures {
    /// A reconcile of `pool` ended: a success clears its count, a failure adds one.
    pub(super) fn record(&self, pool: &(String, String), ok: bool) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            counts.remove(pool);
        } else {
            *counts.entry(pool.clone()).or_default() += 1;
        }
    }

    fn count(&self, pool: &(String, String)) -> u32 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(pool)
            .copied()
            .unwrap_or(1)
    }

    /// `pool` is gone.
    pub(super) fn forget(&self, pool: &(String, String)) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pool);
    }
}

/// Requeue policy on errors: as the error says, but never later than the pool's next poll
/// for transient failures, so that a pool recovers within a poll once the fault is gone.
pub fn error_policy(
    object: Arc<DynamicObject>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    let pool = read_pool(&object).unwrap_or_else(|unreadable| unreadable.stand_in);
    let poll = pool
        .spec
        .scaling
        .resolve()
        .map(|s| poll_period(&ctx, &s))
        .unwrap_or(Duration::from_secs(15));
    let nominal = match error {
        ReconcileError::Kube(_) => error.retry().min(poll),
        ReconcileError::Degraded {
            reason: Reason::ApiUnreachable,
            ..
        } => error.retry().min(poll),
        _ => error.retry(),
    };
    let failures = ctx
        .failures
        .count(&(pool.namespace().unwrap_or_default(), pool.name_any()));
    let spread = fastrand::f64();
    Requeue::requeue(match error.reason() {
        // Bitbucket said when: never sooner, only spread later.
        Reason::RateLimited => nominal.mul_f64(1.0 + 0.2 * spread),
        _ => backoff(nominal, failures, spread),
    })
}

/// The wait before retrying a pool after its `failures`-th failure in a row: from an eighth
/// of the error's own wait (`nominal`), doubling with each failure up to it, spread by ±20%
/// (`spread` in [0, 1)) so that pools failing together do not retry together. A Secret fixed
/// meanwhile wakes its pools at once, whatever the wait.
pub fn backoff(nominal: Duration, failures: u32, spread: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(3);
    let base = (nominal / 8 * 2u32.pow(doublings)).min(nominal);
    base.mul_f64(0.8 + 0.4 * spread.clamp(0.0, 1.0))
}

pub(super) fn degraded(
    reason: Reason,
    message: impl Into<String>,
    retry: Duration,
) -> ReconcileError {
    ReconcileError::Degraded {
        reason,
        message: message.into(),
        retry,
    }
}

/// Map a Bitbucket failure to the condition it shows.
pub(super) fn from_bitbucket(e: BitbucketError) -> ReconcileError {
    let message = e.to_string();
    match e {
        BitbucketError::Unauthorized { .. } => {
            degraded(Reason::CredentialsInvalid, message, Duration::from_secs(60))
        }
        BitbucketError::Forbidden { .. } => {
            degraded(Reason::MissingScope, message, Duration::from_secs(60))
        }
        BitbucketError::RateLimited { retry_after }
        | BitbucketError::BudgetExhausted { retry_after } => {
            degraded(Reason::RateLimited, message, retry_after)
        }
        BitbucketError::QuotaExceeded { .. } => {
            degraded(Reason::QuotaExceeded, message, Duration::from_secs(60))
        }
        BitbucketError::NotFound { .. } => {
            degraded(Reason::NotFound, message, Duration::from_secs(60))
        }
        BitbucketError::BadRequest { .. } | BitbucketError::Decode { .. } => {
            degraded(Reason::ApiRejected, message, Duration::from_secs(60))
        }
        BitbucketError::Server { .. } | BitbucketError::Transport { .. } => {
            degraded(Reason::ApiUnreachable, message, Duration::from_secs(10))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_an_eighth_of_the_wait_to_the_wait_spread_around_it() {
        let minute = Duration::from_secs(60);
        let middle = |failures| backoff(minute, failures, 0.5);
        assert_eq!(middle(1), Duration::from_millis(7500));
        assert_eq!(middle(2), Duration::from_secs(15));
        assert_eq!(middle(3), Duration::from_secs(30));
        assert_eq!(middle(4), minute);
        assert_eq!(middle(40), minute, "never past the error's own wait");
        // Spread ±20%: two pools failing together retry apart.
        assert_eq!(backoff(minute, 9, 0.0), Duration::from_secs(48));
        assert_eq!(backoff(minute, 9, 0.999_999).as_secs(), 71);
        assert_eq!(backoff(minute, 0, 0.5), Duration::from_millis(7500));
    }

    #[test]
    fn each_bitbucket_failure_shows_its_reason_and_retries_as_it_allows() {
        let wait = Duration::from_secs(42);
        for (error, reason, retry) in [
            (
                BitbucketError::Unauthorized {
                    kind: "OAuth consumer",
                    identity: "consumer key".into(),
                },
                Reason::CredentialsInvalid,
                Duration::from_secs(60),
            ),
            (
                BitbucketError::Forbidden {
                    what: "runners".into(),
                    kind: "OAuth consumer",
                    missing_scopes: vec!["runner:write".into()],
                },
                Reason::MissingScope,
                Duration::from_secs(60),
            ),
            (
                BitbucketError::RateLimited { retry_after: wait },
                Reason::RateLimited,
                wait,
            ),
            (
                BitbucketError::BudgetExhausted { retry_after: wait },
                Reason::RateLimited,
                wait,
            ),
            (
                BitbucketError::QuotaExceeded {
                    scope: "acme".into(),
                },
                Reason::QuotaExceeded,
                Duration::from_secs(60),
            ),
            (
                BitbucketError::Server {
                    what: "runners".into(),
                    status: 502,
                },
                Reason::ApiUnreachable,
                Duration::from_secs(10),
            ),
            (
                BitbucketError::Decode {
                    what: "runners".into(),
                    message: "bad".into(),
                },
                Reason::ApiRejected,
                Duration::from_secs(60),
            ),
        ] {
            let mapped = from_bitbucket(error.clone());
            assert_eq!(mapped.reason(), reason, "{error:?}");
            assert_eq!(mapped.retry(), retry, "{error:?}");
            assert_eq!(
                mapped.to_string(),
                error.to_string(),
                "the message is Bitbucket's"
            );
        }
        let kube = ReconcileError::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(kube.reason(), Reason::KubernetesApi);
        assert_eq!(kube.retry(), Duration::from_secs(5));
    }
}
