//! The scaling part of a RunnerPool spec as users write it, and its validation into the
//! settings the policies run on.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::labels::{LabelError, Labels};
use crate::scaling::{PolicyKind, Scaling};
use crate::units::{DurationError, RUNNERS_PER_SCOPE, parse_duration};

/// The shortest poll interval, in seconds: below it a pool would poll in a tight loop.
pub const MIN_POLL_INTERVAL: f64 = 1.0;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolError {
    #[error("spec.scaling: min ({min}) is greater than max ({max}); lower min or raise max")]
    MinAboveMax { min: u32, max: u32 },
    #[error("spec.scaling.max is 0; a pool needs at least one runner (set max to 1 or more)")]
    ZeroMax,
    #[error(
        "spec.scaling.max is {0}; Bitbucket allows at most {RUNNERS_PER_SCOPE} runners per workspace or repository"
    )]
    MaxAboveQuota(u32),
    #[error("spec.scaling.{0}")]
    Duration(#[from] DurationError),
    #[error(
        "spec.scaling.pollInterval {0:?} is under 1s; poll at least a second apart (15s is the default)"
    )]
    PollTooShort(String),
    #[error("spec.labels: {0}")]
    Labels(#[from] LabelError),
    #[error("{0}")]
    Schedule(#[from] crate::schedule::ScheduleError),
}

/// `spec.scaling`, every field optional with the documented default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// Fewest runners (default 1). Keep at least one: Bitbucket fails a step at once when no
    /// online runner has its labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min: Option<u32>,
    /// Most runners (default 10; Bitbucket allows 100 per workspace or repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max: Option<u32>,
    /// Idle runners kept ready beyond the busy ones while the pool is quiet (default 3, so that
    /// a pipeline's parallel steps each find one); one fewer while it is active, two fewer while
    /// busy, never under one. 0: no idle runners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min_idle: Option<u32>,
    /// idle-buffer (default), queue or atlassian-ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyKind>,
    /// How long surplus must last before runners are drained (default 90s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<String>,
    /// How often Bitbucket is polled (default 15s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    /// Windows (cron, UTC) with their own min and minIdle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<crate::schedule::ScheduleSpec>,
    /// Ready runners ahead of the times of the week that were busy before (default true; the
    /// pool learns its demand profile either way, so turning it back on needs no new history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<bool>,
    /// Ready the runners the next stages of pipelines under way will need, just before they
    /// start (default true; needs webhooks, or a repository pool on the queue policy, to see
    /// pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<bool>,
}

impl ScalingSpec {
    /// Apply defaults and check the settings.
    pub fn resolve(&self) -> Result<Scaling, PoolError> {
        let defaults = Scaling::default();
        let min = self.min.unwrap_or(defaults.min);
        let max = self.max.unwrap_or(defaults.max);
        if max == 0 {
            return Err(PoolError::ZeroMax);
        }
        if min > max {
            return Err(PoolError::MinAboveMax { min, max });
        }
        if max > RUNNERS_PER_SCOPE {
            return Err(PoolError::MaxAboveQuota(max));
        }
        let duration = |field, value: &Option<String>, default| match value {
            Some(v) => parse_duration(field, v),
            None => Ok(default),
        };
        let poll_interval = duration("pollInterval", &self.poll_interval, defaults.poll_interval)?;
        if poll_interval < MIN_POLL_INTERVAL {
            return Err(PoolError::PollTooShort(
                self.poll_interval.clone().unwrap_or_default(),
            ));
        }
        Ok(Scaling {
            min,
            max,
            min_idle: self.min_idle.unwrap_or(defaults.min_idle),
            policy: self.policy.unwrap_or_default(),
            scale_down_delay: duration(
                "scaleDownDelay",
                &self.scale_down_delay,
                defaults.scale_down_delay,
            )?,
            poll_interval,
            forecast: self.forecast.unwrap_or(defaults.forecast),
            lookahead: self.lookahead.unwrap_or(defaults.lookahead),
            atlassian: defaults.atlassian,
            schedules: self
                .schedules
                .iter()
                .enumerate()
                .map(|(i, s)| s.resolve(i))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The parts of a RunnerPool manifest the simulator reads: `spec.labels`, `spec.scaling`
/// and whether `spec.cache` is on, with its `retain`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PoolManifest {
    #[serde(default)]
    pub spec: PoolManifestSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolManifestSpec {
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub scaling: ScalingSpec,
    #[serde(default)]
    pub cache: Option<CacheRetainSpec>,
}

/// `spec.cache` as the simulator reads it: only how many volumes it keeps.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CacheRetainSpec {
    #[serde(default)]
    pub retain: Option<u32>,
}

impl PoolManifestSpec {
    pub fn resolve(&self) -> Result<(Labels, Scaling), PoolError> {
        Ok((Labels::new(&self.labels)?, self.scaling.resolve()?))
    }

    /// The warm cache's `retain` where the pool has a cache (default: the pool's max).
    pub fn cache_retain(&self, scaling: &Scaling) -> Option<u32> {
        self.cache
            .as_ref()
            .map(|cache| cache.retain.unwrap_or(scaling.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = ScalingSpec::default().resolve().unwrap();
        assert_eq!((s.min, s.max, s.min_idle), (1, 10, 3));
        assert_eq!(s.policy, PolicyKind::IdleBuffer);
        assert_eq!((s.scale_down_delay, s.poll_interval), (90.0, 15.0));
    }

    #[test]
    fn bad_settings_name_the_field_and_the_fix() {
        let err = |spec: ScalingSpec| spec.resolve().unwrap_err().to_string();
        assert_eq!(
            err(ScalingSpec {
                min: Some(5),
                max: Some(2),
                ..Default::default()
            }),
            "spec.scaling: min (5) is greater than max (2); lower min or raise max"
        );
        assert!(
            err(ScalingSpec {
                max: Some(0),
                ..Default::default()
            })
            .contains("max is 0")
        );
        assert!(
            err(ScalingSpec {
                max: Some(101),
                ..Default::default()
            })
            .contains("at most 100")
        );
        assert!(
            err(ScalingSpec {
                poll_interval: Some("often".into()),
                ..Default::default()
            })
            .starts_with("spec.scaling.pollInterval \"often\" is not a duration")
        );
        for too_short in ["0s", "500ms"] {
            assert!(
                err(ScalingSpec {
                    poll_interval: Some(too_short.into()),
                    ..Default::default()
                })
                .contains("is under 1s"),
                "{too_short} accepted"
            );
        }
        let labels = PoolManifestSpec {
            labels: vec!["Bad".into()],
            ..Default::default()
        };
        assert!(
            labels
                .resolve()
                .unwrap_err()
                .to_string()
                .starts_with("spec.labels: label \"Bad\"")
        );
    }

    #[test]
    fn policy_names_are_kebab_case() {
        let spec: ScalingSpec =
            serde_json::from_str(r#"{"policy": "atlassian-ratio", "minIdle": 2}"#).unwrap();
        assert_eq!(spec.policy, Some(PolicyKind::AtlassianRatio));
        assert_eq!(spec.min_idle, Some(2));
    }

    #[test]
    fn the_forecast_is_on_unless_turned_off() {
        assert!(ScalingSpec::default().resolve().unwrap().forecast);
        let spec: ScalingSpec = serde_json::from_str(r#"{"forecast": false}"#).unwrap();
        assert!(!spec.resolve().unwrap().forecast);
    }
}
