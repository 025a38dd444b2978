use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

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
    /// When each request of the last hour was spent, oldest first.
    spent: Mutex<VecDeque<Instant>>,
}

const HOUR: Duration = Duration::from_secs(3600);

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
            spent: Mutex::new(VecDeque::new()),
        }
    }

    /// Spend one request, or say how long until one is available.
    pub(crate) fn spend(&self) -> Result<(), Error> {
        match self.limiter.check() {
            Ok(snapshot) => {
                self.remaining
                    .store(snapshot.remaining_burst_capacity(), Ordering::Relaxed);
                let now = Instant::now();
                let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
                forget_older_than_an_hour(&mut spent, now);
                spent.push_back(now);
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

    pub(crate) fn spent_last_hour(&self) -> u32 {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        forget_older_than_an_hour(&mut spent, Instant::now());
        spent.len() as u32
    }
}

fn forget_older_than_an_hour(spent: &mut VecDeque<Instant>, now: Instant) {
    while spent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= HOUR)
    {
        spent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_for_an_hour() {
        let budget = Budget::new(RequestBudget::default());
        for _ in 0..3 {
            budget.spend().unwrap();
        }
        assert_eq!(budget.spent_last_hour(), 3);
        let now = Instant::now();
        let mut spent = VecDeque::from([now - HOUR - Duration::from_secs(1), now]);
        forget_older_than_an_hour(&mut spent, now);
        assert_eq!(spent, VecDeque::from([now]));
    }
}
