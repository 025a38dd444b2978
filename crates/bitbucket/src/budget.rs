use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

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

/// The budget as Bitbucket counts its limit: requests within the last `period`, a sliding
/// window. (A token bucket refilling `requests` per period would also let a full burst through
/// at once: up to twice the budget within one of Bitbucket's rolling hours.)
pub(crate) struct Budget {
    budget: RequestBudget,
    /// When each request of the last period was spent, oldest first.
    spent: Mutex<VecDeque<Instant>>,
}

impl Budget {
    pub(crate) fn new(budget: RequestBudget) -> Self {
        Self {
            budget: RequestBudget {
                requests: budget.requests.max(1),
                period: budget.period.max(Duration::from_millis(1)),
            },
            spent: Mutex::new(VecDeque::new()),
        }
    }

    /// Spend one request, or say how long until one is available.
    pub(crate) fn spend(&self) -> Result<(), Error> {
        self.spend_at(Instant::now())
    }

    fn spend_at(&self, now: Instant) -> Result<(), Error> {
        let mut spent = self.window(now);
        if spent.len() >= self.budget.requests as usize {
            let oldest = *spent.front().expect("a full window is not empty");
            let wait = self
                .budget
                .period
                .saturating_sub(now.duration_since(oldest));
            return Err(Error::BudgetExhausted {
                retry_after: wait.max(Duration::from_secs(1)),
            });
        }
        spent.push_back(now);
        Ok(())
    }

    /// Requests allowed per period.
    pub(crate) fn requests(&self) -> u32 {
        self.budget.requests
    }

    /// Requests left in the window now.
    pub(crate) fn remaining(&self) -> u32 {
        let spent = self.window(Instant::now()).len() as u32;
        self.budget.requests.saturating_sub(spent)
    }

    /// Requests spent within the last period (an hour of the operator's clock).
    pub(crate) fn spent_last_hour(&self) -> u32 {
        self.window(Instant::now()).len() as u32
    }

    /// The requests of the period up to `now`, older ones forgotten.
    fn window(&self, now: Instant) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        while spent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.budget.period)
        {
            spent.pop_front();
        }
        spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_over_a_sliding_period_as_bitbucket_counts_them() {
        let budget = Budget::new(RequestBudget {
            requests: 3,
            period: Duration::from_secs(60),
        });
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        budget.spend_at(at(0)).unwrap();
        budget.spend_at(at(10)).unwrap();
        budget.spend_at(at(20)).unwrap();
        assert_eq!(budget.window(at(20)).len(), 3);
        // Full: the next request waits until the oldest leaves the window, 40 s on.
        match budget.spend_at(at(20)) {
            Err(Error::BudgetExhausted { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(40))
            }
            other => panic!("{other:?}"),
        }
        // Never more than 3 in any 60 s, however the requests are spread.
        assert!(budget.spend_at(at(59)).is_err());
        budget.spend_at(at(60)).unwrap();
        assert!(budget.spend_at(at(69)).is_err());
        budget.spend_at(at(70)).unwrap();
        assert_eq!(budget.window(at(70)).len(), 3);
    }
}
