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

/// A duration as `parse_duration` reads it, to the second: `15s`, `1m12s`, `2h0m5s`.
pub fn format_duration(seconds: Seconds) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{field} {value:?} is not a size; write a whole number with a binary or decimal suffix, such as 50Gi or 100G"
)]
pub struct SizeError {
    pub field: &'static str,
    pub value: String,
}

/// Bytes of a Kubernetes storage quantity: a whole number with an optional suffix (`50Gi`,
/// `100G`, `1Ti`, `512Mi`). Fractions and exponents, which storage sizes do not use, are
/// refused rather than guessed.
pub fn parse_bytes(field: &'static str, value: &str) -> Result<u64, SizeError> {
    let error = || SizeError {
        field,
        value: value.to_owned(),
    };
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| error())?;
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "P" => 1000u64.pow(5),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return Err(error()),
    };
    number.checked_mul(multiplier).ok_or_else(error)
}

/// Bitbucket's limit of runners per workspace and per repository.
pub const RUNNERS_PER_SCOPE: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_they_are_read() {
        for (seconds, written) in [
            (15.0, "15s"),
            (72.4, "1m12s"),
            (7205.0, "2h0m5s"),
            (0.2, "0s"),
        ] {
            assert_eq!(format_duration(seconds), written);
            assert_eq!(parse_duration("d", written).unwrap(), seconds.round());
        }
    }

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

    #[test]
    fn sizes_parse_as_kubernetes_writes_them_or_name_the_field() {
        assert_eq!(parse_bytes("size", "50Gi").unwrap(), 50 << 30);
        assert_eq!(parse_bytes("size", "100G").unwrap(), 100_000_000_000);
        assert_eq!(parse_bytes("size", "1024").unwrap(), 1024);
        for bad in ["", "Gi", "1.5Gi", "5gb", "-1Gi", "1e9", "99999999999Pi"] {
            let err = parse_bytes("spec.cache.size", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("spec.cache.size"),
                "{bad}: {err}"
            );
        }
    }
}
