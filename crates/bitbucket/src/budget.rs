use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::Error;

/// A request budget per identity: `requests` per rolling `period`, spent one per API call.
/// Bitbucket allows 1,000 per hour; the default keeps 100 in reserve for people and scripts
/// that share the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBudget {
    pub requests: u32,
    pub period: Duration,
}

impl Default for RequestBudget {
    fn default() -> Self {
        Self {
            requests: 900,
            period: Duration::from_secs(3600),
        }
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::StateInformationMiddleware,
>;

pub(crate) struct Budget {
    limiter: Limiter,
    remaining: Arc<AtomicU32>,
}

impl Budget {
    pub(crate) fn new(budget: RequestBudget) -> Self {
        let requests = NonZeroU32::new(budget.requests.max(1)).expect("max(1) is non-zero");
        let replenish = (budget.period / requests.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(replenish)
            .expect("period is non-zero")
            .allow_burst(requests);
        Self {
            limiter: RateLimiter::direct(quota).with_middleware(),
            remaining: Arc::new(AtomicU32::new(requests.get())),
        }
    }

    /// Spend one request, or say how long until one is available.
    pub(crate) fn spend(&self) -> Result<(), Error> {
        match self.limiter.check() {
            Ok(snapshot) => {
                self.remaining
                    .store(snapshot.remaining_burst_capacity(), Ordering::Relaxed);
                Ok(())
            }
            Err(not_until) => {
                self.remaining.store(0, Ordering::Relaxed);
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Error::BudgetExhausted {
                    retry_after: wait.max(Duration::from_secs(1)),
                })
            }
        }
    }

    pub(crate) fn remaining(&self) -> u32 {
        self.remaining.load(Ordering::Relaxed)
    }
}
