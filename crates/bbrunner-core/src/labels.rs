//! Runner labels, with Bitbucket's rules (reference §3): lowercase letters, digits and dots,
//! at most 50 characters each, at most 10 per runner counting the system labels.

use std::fmt;

use thiserror::Error;

/// Labels every Linux Docker runner carries whether or not the user names them.
pub const SYSTEM_LABELS: [&str; 2] = ["self.hosted", "linux"];
pub const MAX_LABEL_LEN: usize = 50;
pub const MAX_LABELS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LabelError {
    #[error("label {label:?} is invalid: {reason}; use only lowercase letters, digits and dots")]
    Invalid { label: String, reason: &'static str },
    #[error(
        "label {label:?} is {len} characters long; Bitbucket allows at most {MAX_LABEL_LEN}, shorten it"
    )]
    TooLong { label: String, len: usize },
    #[error(
        "{count} labels including the system labels self.hosted and linux; Bitbucket allows at most {MAX_LABELS}, remove {excess}",
        excess = count - MAX_LABELS
    )]
    TooMany { count: usize },
}

/// Check one label against Bitbucket's rules.
pub fn validate_label(label: &str) -> Result<(), LabelError> {
    let invalid = |reason| LabelError::Invalid {
        label: label.to_owned(),
        reason,
    };
    if label.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.'))
    {
        return Err(if c.is_ascii_uppercase() {
            invalid("it has uppercase letters")
        } else if c.is_whitespace() {
            invalid("it has white space")
        } else {
            invalid("it has a character other than a-z, 0-9 and '.'")
        });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(LabelError::TooLong {
            label: label.to_owned(),
            len: label.len(),
        });
    }
    Ok(())
}

/// A runner's full label set: system labels first, then custom ones in the order given,
/// without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels(Vec<String>);

impl Labels {
    /// Build from custom labels; system labels are implied and may also be listed.
    pub fn new<I, S>(custom: I) -> Result<Self, LabelError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut all: Vec<String> = SYSTEM_LABELS.iter().map(|s| s.to_string()).collect();
        for label in custom {
            let label = label.as_ref();
            validate_label(label)?;
            if !all.iter().any(|l| l == label) {
                all.push(label.to_owned());
            }
        }
        if all.len() > MAX_LABELS {
            return Err(LabelError::TooMany { count: all.len() });
        }
        Ok(Self(all))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Labels beyond the system ones.
    pub fn custom(&self) -> &[String] {
        &self.0[SYSTEM_LABELS.len()..]
    }

    /// Whether a runner with these labels can take a step asking for `wanted`.
    pub fn serves<S: AsRef<str>>(&self, wanted: &[S]) -> bool {
        wanted
            .iter()
            .all(|w| self.0.iter().any(|l| l == w.as_ref()))
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn system_labels_first_duplicates_dropped_order_kept() {
        let labels = Labels::new(["build", "linux", "gpu.big", "build", "self.hosted"]).unwrap();
        assert_eq!(
            labels.as_slice(),
            ["self.hosted", "linux", "build", "gpu.big"]
        );
        assert_eq!(labels.custom(), ["build", "gpu.big"]);
        assert_eq!(labels.to_string(), "self.hosted,linux,build,gpu.big");
    }

    #[test]
    fn each_bad_label_names_itself_and_the_fix() {
        let msg = |l: &str| Labels::new([l]).unwrap_err().to_string();
        assert!(msg("Build").contains("\"Build\" is invalid: it has uppercase letters"));
        assert!(msg("my label").contains("white space"));
        assert!(msg("a_b").contains("other than a-z, 0-9 and '.'"));
        assert!(msg("").contains("empty"));
        let long = "a".repeat(51);
        assert!(msg(&long).contains("51 characters long; Bitbucket allows at most 50"));
        assert!(Labels::new(["a".repeat(50)]).is_ok());
    }

    #[test]
    fn at_most_ten_including_system_labels() {
        let eight: Vec<String> = (0..8).map(|i| format!("l{i}")).collect();
        assert_eq!(Labels::new(&eight).unwrap().as_slice().len(), 10);
        let nine: Vec<String> = (0..9).map(|i| format!("l{i}")).collect();
        let err = Labels::new(&nine).unwrap_err();
        assert_eq!(err, LabelError::TooMany { count: 11 });
        assert!(err.to_string().contains("remove 1"));
    }

    #[test]
    fn serves_requires_every_wanted_label() {
        let labels = Labels::new(["build"]).unwrap();
        assert!(labels.serves(&["self.hosted", "linux", "build"]));
        assert!(labels.serves::<&str>(&[]));
        assert!(!labels.serves(&["self.hosted", "gpu"]));
    }

    proptest! {
        #[test]
        fn valid_input_always_yields_a_valid_set(custom in proptest::collection::vec("[a-z0-9.]{1,50}", 0..8)) {
            let labels = Labels::new(&custom).unwrap();
            prop_assert_eq!(&labels.as_slice()[..2], &SYSTEM_LABELS[..]);
            prop_assert!(labels.as_slice().len() <= MAX_LABELS);
            for l in &custom {
                prop_assert!(labels.as_slice().contains(l));
            }
            let mut seen = std::collections::HashSet::new();
            prop_assert!(labels.as_slice().iter().all(|l| seen.insert(l)));
        }
    }
}
