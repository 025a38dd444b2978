//! The queue wait of steps as a pool sees them: from the first poll that finds a step PENDING
//! to the first that finds it started. Kept per pool, since each pool reads only its own
//! repository's steps.

use std::collections::HashMap;

use crate::units::Seconds;

/// A step in one poll's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenStep<'a> {
    pub uuid: &'a str,
    pub pending: bool,
}

#[derive(Debug, Default)]
pub struct QueueWaits {
    /// Per pool: when each step still pending was first seen.
    pending: HashMap<String, HashMap<String, Seconds>>,
}

impl QueueWaits {
    /// Record one poll of `pool`'s steps; returns the waits of the steps seen to start.
    pub fn observe(&mut self, pool: &str, steps: &[SeenStep<'_>], now: Seconds) -> Vec<Seconds> {
        let pending = self.pending.entry(pool.to_owned()).or_default();
        let mut waits = Vec::new();
        for step in steps {
            if step.pending {
                pending.entry(step.uuid.to_owned()).or_insert(now);
            } else if let Some(since) = pending.remove(step.uuid) {
                waits.push(now - since);
            }
        }
        // Steps gone from the list finished or were cancelled before we saw them start.
        pending.retain(|uuid, _| steps.iter().any(|s| s.uuid == uuid));
        waits
    }

    /// Drop what is kept for a pool that is gone.
    pub fn forget(&mut self, pool: &str) {
        self.pending.remove(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(uuid: &str, pending: bool) -> SeenStep<'_> {
        SeenStep { uuid, pending }
    }

    #[test]
    fn pools_of_different_repositories_keep_their_own_pending_steps() {
        let mut waits = QueueWaits::default();
        assert!(waits.observe("ci/a", &[step("a1", true)], 0.0).is_empty());
        assert!(waits.observe("ci/b", &[step("b1", true)], 1.0).is_empty());
        // Pool a's poll does not list b's step, and must not forget it.
        assert!(waits.observe("ci/a", &[step("a1", true)], 10.0).is_empty());
        assert_eq!(
            waits.observe("ci/b", &[step("b1", false)], 21.0),
            vec![20.0]
        );
        assert_eq!(
            waits.observe("ci/a", &[step("a1", false)], 30.0),
            vec![30.0]
        );
    }

    #[test]
    fn a_step_that_vanished_is_not_measured_and_a_forgotten_pool_starts_afresh() {
        let mut waits = QueueWaits::default();
        waits.observe("p", &[step("s", true)], 0.0);
        waits.observe("p", &[], 5.0);
        assert!(waits.observe("p", &[step("s", false)], 9.0).is_empty());
        waits.observe("p", &[step("t", true)], 10.0);
        waits.forget("p");
        assert!(waits.observe("p", &[step("t", false)], 20.0).is_empty());
    }
}
