//! How often a pool polls Bitbucket: its own interval, stretched to its identity's fair
//! share of the request budget, on the operator's clock.

use std::time::Duration;

use super::Context;

/// How a managed pool polls now, in the operator's seconds: its own interval, or longer
/// where its identity's pools would spend more than their share of the budget on runner
/// lists ([`bbrunner_core::scaling::fair_poll_interval`]). Worked out once per reconcile.
#[derive(Debug, Clone, Copy)]
pub(super) struct Polling {
    pub every: f64,
    fair: f64,
}

impl Polling {
    pub fn of(
        ctx: &Context,
        scaling: &bbrunner_core::scaling::Scaling,
        client: &bitbucket::Client,
    ) -> Self {
        let fair = bbrunner_core::scaling::fair_poll_interval(
            client.budget_requests(),
            ctx.hub.scopes_of(&client.opaque_id()),
        );
        Self {
            every: scaling.poll_interval.max(fair),
            fair,
        }
    }

    /// Real time between the pool's polls.
    pub fn period(&self, ctx: &Context) -> Duration {
        ctx.clock.real(Duration::from_secs_f64(self.every.max(1.0)))
    }

    /// Real time a scope's runner list may be reused for.
    pub fn list_max_age(&self, ctx: &Context) -> Duration {
        let seconds = bbrunner_core::scaling::list_max_age(self.every.max(1.0), self.fair);
        ctx.clock.real(Duration::from_secs_f64(seconds))
    }
}

/// Real time between a pool's polls: its interval on the operator's clock.
pub(super) fn poll_period(ctx: &Context, scaling: &bbrunner_core::scaling::Scaling) -> Duration {
    ctx.clock
        .real(Duration::from_secs_f64(scaling.poll_interval.max(1.0)))
}
