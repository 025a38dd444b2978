//! A pool's demand forecast: how many runners it kept busy at each time of the week, learned
//! from its own history, so that runners for a busy quarter-hour are online when it begins
//! instead of one start latency after its first steps.
//!
//! The week has 672 slots of 15 minutes. At the end of each slot the pool folds the peak
//! demand it saw (busy runners, plus queued steps where the queue is known) into that slot's
//! value: half the old value plus half the new one, so a week's change counts at once and a
//! pattern that stops fades within a few weeks. The state is bounded (one byte per slot, in
//! half-runners) and travels in the pool's status.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::units::Seconds;

/// One slot of the profile.
pub const SLOT: Seconds = 900.0;
/// Slots in a week.
pub const SLOTS: usize = 7 * 24 * 4;
/// How far ahead the forecast looks: a start latency and a few polls, so that the runners a
/// slot needs are online as it begins.
pub const LEAD: Seconds = 300.0;
/// The share of a slot's expected peak made ready ahead of it. The policy's own warm runners
/// and its reaction to arrivals cover the rest; preparing the whole peak cost more idle time
/// than it saved waits (BENCHMARKS.md: on the workday scenario it passed 0.4 of the oracle's
/// idle runner-hours).
pub const PREPARED_SHARE: f64 = 0.8;
/// Seconds from the Unix epoch (a Thursday) to the first Monday, 1970-01-05 00:00 UTC.
const FIRST_MONDAY: Seconds = 4.0 * 86_400.0;
/// A slot never observed.
const UNSEEN: u8 = u8::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProfileError {
    #[error(
        "status.demandProfile is not a demand profile ({0}); delete the field and the pool learns again"
    )]
    Malformed(&'static str),
}

/// Peak demand per slot of the week, in half-runners (the mean of two weeks can be a half).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DemandProfile {
    half_runners: [u8; SLOTS],
}

impl Default for DemandProfile {
    fn default() -> Self {
        Self {
            half_runners: [UNSEEN; SLOTS],
        }
    }
}

/// The slot of the week (0 = Monday 00:00 UTC) that `at` (Unix seconds) falls in.
pub fn slot_of_week(at: Seconds) -> usize {
    (((at - FIRST_MONDAY) / SLOT).floor() as i64).rem_euclid(SLOTS as i64) as usize
}

/// The slot `at` falls in, counted from the Unix epoch: it changes every 15 minutes, so the
/// pool knows when to fold a slot's peak into the profile.
pub fn slot_number(at: Seconds) -> i64 {
    (at / SLOT).floor() as i64
}

impl DemandProfile {
    /// Fold a slot's observed peak demand into the profile.
    pub fn learn(&mut self, slot: usize, peak: u32) {
        let observed = peak.saturating_mul(2).min(u32::from(UNSEEN) - 1) as u8;
        let cell = &mut self.half_runners[slot];
        *cell = if *cell == UNSEEN {
            observed
        } else {
            // Rounded down, so that a pattern that stopped fades to nothing.
            ((u16::from(*cell) + u16::from(observed)) / 2) as u8
        };
    }

    /// Runners to have ready at `now`: [`PREPARED_SHARE`] of the peak expected between `now`
    /// and [`LEAD`] from now.
    pub fn expected(&self, now: Seconds) -> u32 {
        [now, now + LEAD]
            .into_iter()
            .map(|t| self.half_runners[slot_of_week(t)])
            .filter(|&cell| cell != UNSEEN)
            .map(|cell| (f64::from(cell) / 2.0 * PREPARED_SHARE).ceil() as u32)
            .max()
            .unwrap_or(0)
    }

    /// Slots observed at least once.
    pub fn seen(&self) -> usize {
        self.half_runners.iter().filter(|&&c| c != UNSEEN).count()
    }

    /// The profile as the status carries it: base64 of one byte per slot.
    pub fn encode(&self) -> String {
        STANDARD.encode(self.half_runners)
    }

    pub fn decode(encoded: &str) -> Result<Self, ProfileError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| ProfileError::Malformed("not base64"))?;
        let half_runners = bytes
            .try_into()
            .map_err(|_| ProfileError::Malformed("not one byte per 15 minutes of a week"))?;
        Ok(Self { half_runners })
    }
}

impl fmt::Debug for DemandProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DemandProfile({} of {SLOTS} slots seen)", self.seen())
    }
}

impl Serialize for DemandProfile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for DemandProfile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = String::deserialize(deserializer)?;
        Self::decode(&encoded).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONDAY: Seconds = 1_767_571_200.0; // 2026-01-05 00:00 UTC

    #[test]
    fn slots_start_on_monday_midnight_utc() {
        assert_eq!(slot_of_week(MONDAY), 0);
        assert_eq!(slot_of_week(MONDAY + 899.0), 0);
        assert_eq!(slot_of_week(MONDAY + 900.0), 1);
        assert_eq!(slot_of_week(MONDAY - 1.0), SLOTS - 1);
        assert_eq!(slot_of_week(MONDAY + 7.0 * 86_400.0 + 2.0 * 3600.0), 8);
    }

    #[test]
    fn a_slot_learns_its_peak_then_halves_towards_each_new_week() {
        let mut profile = DemandProfile::default();
        let two_am = MONDAY + 2.0 * 3600.0;
        assert_eq!(profile.expected(two_am), 0);
        profile.learn(slot_of_week(two_am), 10);
        assert_eq!(profile.expected(two_am), 8, "four fifths of the peak");
        // The lead: five minutes before, the slot ahead counts.
        assert_eq!(profile.expected(two_am - 240.0), 8);
        assert_eq!(profile.expected(two_am - 600.0), 0);
        profile.learn(slot_of_week(two_am), 1);
        assert_eq!(
            profile.expected(two_am),
            5,
            "a peak of 5.5, four fifths rounded up"
        );
        for _ in 0..3 {
            profile.learn(slot_of_week(two_am), 0);
        }
        assert_eq!(profile.expected(two_am), 1);
        profile.learn(slot_of_week(two_am), 0);
        assert_eq!(profile.expected(two_am), 0, "a pattern that stopped fades");
    }

    #[test]
    fn the_profile_round_trips_through_its_status_text_and_refuses_garbage() {
        let mut profile = DemandProfile::default();
        profile.learn(3, 5);
        profile.learn(600, 200);
        let text = profile.encode();
        assert_eq!(text.len(), 896, "bounded: 672 bytes in base64");
        assert_eq!(DemandProfile::decode(&text), Ok(profile));
        assert_eq!(profile.seen(), 2);
        assert!(DemandProfile::decode("not base64!").is_err());
        let short = DemandProfile::decode(&STANDARD.encode([0u8; 10])).unwrap_err();
        assert!(short.to_string().contains("status.demandProfile"));
        assert_eq!(format!("{profile:?}"), "DemandProfile(2 of 672 slots seen)");
    }
}
