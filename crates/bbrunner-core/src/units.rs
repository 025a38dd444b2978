//! The units every part of the core measures in, and Bitbucket's fixed limits: a leaf that
//! imports nothing of the core, so that the modules using it never import each other back.

use thiserror::Error;

/// Seconds, the unit of every time in the core (time is always an input).
pub type Seconds = f64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("{field} {value:?} is not a duration; write it like 15s, 5m or 1h30m")]
    Invalid { field: &'static str, value: String },
    #[error("{field} {value:?} is negative; durations are zero or more")]
    Negative { field: &'static str, value: String },
}

/// Parse a duration such as `15s`, `5m` or `1h30m` (Kubernetes' and jiff's friendly format).
pub fn parse_duration(field: &'static str, value: &str) -> Result<Seconds, DurationError> {
    let parsed: jiff::SignedDuration =
        value.trim().parse().map_err(|_| DurationError::Invalid {
            field,
            value: value.to_owned(),
        })?;
    if parsed.is_negative() {
        return Err(DurationError::Negative {
            field,
            value: value.to_owned(),
        });
    }
    Ok(parsed.as_secs_f64())
}

/// Bitbucket's limit of runners per workspace and per repository.
pub const RUNNERS_PER_SCOPE: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_or_name_the_field() {
        assert_eq!(parse_duration("scaleDownDelay", "5m").unwrap(), 300.0);
        assert_eq!(parse_duration("pollInterval", "15s").unwrap(), 15.0);
        assert_eq!(parse_duration("x", "1h30m").unwrap(), 5400.0);
        let err = parse_duration("scaleDownDelay", "soon").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("scaleDownDelay \"soon\" is not a duration")
        );
        assert!(parse_duration("x", "-5m").is_err());
    }
}
