//! Scheduled overrides: cron windows (UTC) during which a pool keeps a higher floor, e.g. more
//! warm runners on weekday mornings. `schedule(now)` is a pure function of the time given.

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::units::{Seconds, parse_duration};

/// Overrides of `min` and `minIdle` in force now (from schedules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    pub min: Option<u32>,
    pub min_idle: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error(
        "spec.scaling.schedules[{index}].cron {cron:?}: {reason}; write five fields, minute hour day-of-month month day-of-week, such as \"0 8 * * 1-5\""
    )]
    Cron {
        index: usize,
        cron: String,
        reason: String,
    },
    #[error("spec.scaling.schedules[{index}].{source}")]
    Duration {
        index: usize,
        source: crate::units::DurationError,
    },
}

/// One field of a cron expression as a bit set.
fn field(raw: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in raw.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("bad step {s:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err("a step of 0".into());
        }
        let (start, end) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = a.parse::<u32>().map_err(|_| format!("bad value {a:?}"))?;
            let b = b.parse::<u32>().map_err(|_| format!("bad value {b:?}"))?;
            (a, b)
        } else {
            let v = range
                .parse::<u32>()
                .map_err(|_| format!("bad value {range:?}"))?;
            (v, if part.contains('/') { hi } else { v })
        };
        if start < lo || end > hi || start > end {
            return Err(format!("{range:?} is outside {lo}-{hi}"));
        }
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// A five-field cron expression: minute hour day-of-month month day-of-week (0 or 7 = Sunday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

impl Cron {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let fields: Vec<&str> = raw.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields.as_slice() else {
            return Err(format!("{} fields instead of 5", fields.len()));
        };
        let mut weekdays = field(dow, 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Self {
            minutes: field(m, 0, 59)?,
            hours: field(h, 0, 23)?,
            days: field(dom, 1, 31)?,
            months: field(mon, 1, 12)?,
            weekdays,
            days_any: *dom == "*",
            weekdays_any: *dow == "*",
        })
    }

    /// Whether the minute starting at `unix_seconds` (UTC) matches.
    pub fn matches(&self, unix_seconds: i64) -> bool {
        let Ok(t) = jiff::Timestamp::from_second(unix_seconds) else {
            return false;
        };
        let dt = t.to_zoned(TimeZone::UTC).datetime();
        let bit = |set: u64, v: i64| set & (1 << v) != 0;
        let day = bit(self.days, i64::from(dt.day()));
        let weekday = bit(
            self.weekdays,
            i64::from(dt.weekday().to_sunday_zero_offset()),
        );
        // Cron's rule: when both day fields are restricted, either may match.
        let day_ok = match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        };
        bit(self.minutes, i64::from(dt.minute()))
            && bit(self.hours, i64::from(dt.hour()))
            && bit(self.months, i64::from(dt.month()))
            && day_ok
    }
}

/// `spec.scaling.schedules[]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// When the window opens (cron, UTC), e.g. "0 8 * * 1-5".
    pub cron: String,
    /// How long it stays open, e.g. 10h.
    pub duration: String,
    /// The pool's min while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min: Option<u32>,
    /// The pool's minIdle while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min_idle: Option<u32>,
}

/// A validated window.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub cron: Cron,
    pub duration: Seconds,
    pub min: Option<u32>,
    pub min_idle: Option<u32>,
}

impl ScheduleSpec {
    pub fn resolve(&self, index: usize) -> Result<Schedule, ScheduleError> {
        let cron = Cron::parse(&self.cron).map_err(|reason| ScheduleError::Cron {
            index,
            cron: self.cron.clone(),
            reason,
        })?;
        let duration = parse_duration("duration", &self.duration)
            .map_err(|source| ScheduleError::Duration { index, source })?;
        Ok(Schedule {
            cron,
            duration,
            min: self.min,
            min_idle: self.min_idle,
        })
    }
}

/// Longest window looked back over: a week.
const MAX_WINDOW_MINUTES: i64 = 7 * 24 * 60;

/// The overrides in force at `now` (UNIX seconds): the highest floor of the open windows.
pub fn overrides_at(schedules: &[Schedule], now: Seconds) -> Overrides {
    let minute = (now as i64).div_euclid(60) * 60;
    let mut overrides = Overrides::default();
    for s in schedules {
        let window = ((s.duration / 60.0).ceil() as i64).min(MAX_WINDOW_MINUTES);
        let open = (0..window).any(|back| s.cron.matches(minute - back * 60));
        if open {
            overrides.min = overrides.min.max(s.min);
            overrides.min_idle = overrides.min_idle.max(s.min_idle);
        }
    }
    overrides
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 is a Monday.
    fn at(day: u32, hour: u32, minute: u32) -> Seconds {
        let t: jiff::Timestamp = format!("2026-11-{day:02}T{hour:02}:{minute:02}:00Z")
            .parse()
            .unwrap();
        t.as_second() as f64
    }

    fn workday_morning() -> Schedule {
        ScheduleSpec {
            cron: "0 8 * * 1-5".into(),
            duration: "10h".into(),
            min: Some(4),
            min_idle: Some(2),
        }
        .resolve(0)
        .unwrap()
    }

    #[test]
    fn a_weekday_window_opens_at_eight_for_ten_hours() {
        let s = [workday_morning()];
        assert_eq!(overrides_at(&s, at(30, 7, 59)), Overrides::default());
        assert_eq!(
            overrides_at(&s, at(30, 8, 0)),
            Overrides {
                min: Some(4),
                min_idle: Some(2)
            }
        );
        assert_eq!(overrides_at(&s, at(30, 17, 59)).min, Some(4));
        assert_eq!(overrides_at(&s, at(30, 18, 0)), Overrides::default());
        // Saturday 2026-11-28: closed.
        assert_eq!(overrides_at(&s, at(28, 9, 0)), Overrides::default());
    }

    #[test]
    fn the_highest_floor_of_open_windows_wins() {
        let night = ScheduleSpec {
            cron: "*/30 * * * *".into(),
            duration: "1h".into(),
            min: Some(6),
            min_idle: None,
        }
        .resolve(1)
        .unwrap();
        let o = overrides_at(&[workday_morning(), night], at(30, 9, 0));
        assert_eq!(
            o,
            Overrides {
                min: Some(6),
                min_idle: Some(2)
            }
        );
    }

    #[test]
    fn cron_fields_lists_ranges_steps_and_sunday_as_seven() {
        let c = Cron::parse("0,30 9-17/4 * * 7").unwrap();
        assert!(c.matches(at(29, 9, 0) as i64)); // Sunday
        assert!(c.matches(at(29, 13, 30) as i64));
        assert!(!c.matches(at(29, 11, 0) as i64));
        assert!(!c.matches(at(30, 9, 0) as i64)); // Monday
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let bad = |cron: &str, duration: &str| {
            ScheduleSpec {
                cron: cron.into(),
                duration: duration.into(),
                min: None,
                min_idle: None,
            }
            .resolve(2)
            .unwrap_err()
            .to_string()
        };
        assert!(
            bad("0 8 * *", "1h")
                .starts_with("spec.scaling.schedules[2].cron \"0 8 * *\": 4 fields instead of 5")
        );
        assert!(bad("0 25 * * *", "1h").contains("outside 0-23"));
        assert!(
            bad("0 8 * * *", "soon")
                .starts_with("spec.scaling.schedules[2].duration \"soon\" is not a duration")
        );
    }
}
