//! How often a pool polls Bitbucket: its own interval, stretched to its identity's fair
//! share of the request budget, on the operator's clock.

use std::time::Duration;

use super::Context;

/// A managed pool's poll interval, in the operator's seconds: its own, or longer where its
/// identity's pools would spend more than their share of the budget on runner lists
/// ([`bbrunner_core::scaling::fair_poll_interval`]).
pub(super) fn poll_in_effect(
    ctx: &Context,
    scaling: &bbrunner_core::scaling::Scaling,
    client: &bitbucket::Client,
) -> f64 {
    scaling.poll_interval.max(fair_poll(ctx, client))
}

/// The shortest poll interval the client's identity allows its pools now.
pub(super) fn fair_poll(ctx: &Context, client: &bitbucket::Client) -> f64 {
    bbrunner_core::scaling::fair_poll_interval(
        client.budget_requests(),
        ctx.hub.scopes_of(&client.opaque_id()),
    )
}

/// Real time between a pool's polls: its interval on the operator's clock.
pub(super) fn poll_period(ctx: &Context, scaling: &bbrunner_core::scaling::Scaling) -> Duration {
    ctx.clock
        .real(Duration::from_secs_f64(scaling.poll_interval.max(1.0)))
}
