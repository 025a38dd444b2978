//! Whether Bitbucket's clock and the operator's agree. Every time-based rule (a runner
//! UNREGISTERED or OFFLINE too long, scale-down delays, the forecast's slots) compares
//! Bitbucket's timestamps with the operator's clock: when Bitbucket's run ahead, runners look
//! younger than they are, and when its own clock runs on another scale or origin (a fake's
//! `--time-scale` without the operator's `--clock-origin`), runners churn.

use crate::units::Seconds;

/// Timestamps this far ahead of the operator's clock are not the network's or the API's
/// delay: the clocks disagree.
pub const TOLERANCE: Seconds = 120.0;

/// How far the newest of Bitbucket's `stamps` is ahead of `now`, when more than
/// [`TOLERANCE`].
pub fn ahead(now: Seconds, stamps: impl IntoIterator<Item = Seconds>) -> Option<Seconds> {
    stamps
        .into_iter()
        .map(|stamp| stamp - now)
        .filter(|ahead| *ahead > TOLERANCE)
        .max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timestamps_past_the_tolerance_say_the_clocks_disagree() {
        assert_eq!(ahead(1000.0, [900.0, 1000.0, 1100.0]), None);
        assert_eq!(ahead(1000.0, []), None);
        assert_eq!(ahead(1000.0, [900.0, 1500.0, 1200.0]), Some(500.0));
    }
}
