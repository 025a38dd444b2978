//! Bitbucket identifiers. The runner and the API write UUIDs as `{lowercase-hyphenated}`;
//! users paste them with or without braces and in any case, so parsing normalises.

use std::fmt;

use thiserror::Error;

/// A UUID failed to parse; `variable` is the name the user knows it by (e.g. `RUNNER_UUID`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
// The value is left out on purpose: a mis-pasted command can put a secret where a UUID belongs.
#[error(
    "{variable} is not a UUID ({reason}); expected {{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}} in hex digits, braces optional"
)]
pub struct InvalidUuid {
    pub variable: &'static str,
    pub reason: &'static str,
}

fn normalise(variable: &'static str, raw: &str) -> Result<String, InvalidUuid> {
    let fail = |reason| InvalidUuid { variable, reason };
    let trimmed = raw.trim();
    let bare = match (trimmed.strip_prefix('{'), trimmed.strip_suffix('}')) {
        (Some(_), Some(_)) if trimmed.len() >= 2 => &trimmed[1..trimmed.len() - 1],
        (None, None) => trimmed,
        _ => return Err(fail("unbalanced braces")),
    };
    if bare.is_empty() {
        return Err(fail("empty"));
    }
    let groups: Vec<&str> = bare.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lengths != [8, 4, 4, 4, 12] {
        return Err(fail("wrong length or grouping"));
    }
    if !groups
        .iter()
        .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(fail("non-hex character"));
    }
    Ok(format!("{{{}}}", bare.to_ascii_lowercase()))
}

macro_rules! uuid_type {
    ($(#[$doc:meta])* $name:ident, $variable:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The environment variable the runner reads this id from.
            pub const VARIABLE: &'static str = $variable;

            pub fn parse(raw: &str) -> Result<Self, InvalidUuid> {
                normalise($variable, raw).map(Self)
            }

            /// With braces, as the API and the runner expect: `{...}`.
            pub fn braced(&self) -> &str {
                &self.0
            }

            /// Without braces, as Docker container names and Kubernetes labels need.
            pub fn bare(&self) -> &str {
                &self.0[1..self.0.len() - 1]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidUuid;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_type!(
    /// The workspace (account) that owns runners.
    AccountUuid,
    "ACCOUNT_UUID"
);
uuid_type!(
    /// A repository, for repository-scoped runners.
    RepositoryUuid,
    "REPOSITORY_UUID"
);
uuid_type!(
    /// One runner registration in Bitbucket.
    RunnerUuid,
    "RUNNER_UUID"
);

#[cfg(test)]
mod tests {
    use super::*;

    const CANON: &str = "{5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f}";

    #[test]
    fn accepts_braces_or_not_in_any_case() {
        for raw in [
            CANON,
            "5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f",
            "{5C1D2E3F-4A5B-5C6D-8E7F-9A0B1C2D3E4F}",
            "  5C1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4F ",
        ] {
            let id = RunnerUuid::parse(raw).unwrap();
            assert_eq!(id.braced(), CANON);
            assert_eq!(id.bare(), &CANON[1..37]);
            assert_eq!(id.to_string(), CANON);
        }
    }

    #[test]
    fn rejections_name_the_variable_and_reason() {
        let cases = [
            ("", "empty"),
            ("{}", "empty"),
            ("{5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f", "unbalanced braces"),
            ("5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f}", "unbalanced braces"),
            (
                "5c1d2e3f4a5b5c6d8e7f9a0b1c2d3e4f",
                "wrong length or grouping",
            ),
            (
                "5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4",
                "wrong length or grouping",
            ),
            ("5c1d2e3g-4a5b-5c6d-8e7f-9a0b1c2d3e4f", "non-hex character"),
        ];
        for (raw, reason) in cases {
            let err = AccountUuid::parse(raw).unwrap_err();
            assert_eq!(err.variable, "ACCOUNT_UUID");
            assert_eq!(err.reason, reason, "{raw:?}");
            assert!(err.to_string().starts_with("ACCOUNT_UUID is not a UUID"));
        }
    }

    #[test]
    fn serde_round_trip_normalises() {
        let id: RepositoryUuid =
            serde_json::from_str("\"5C1D2E3F-4A5B-5C6D-8E7F-9A0B1C2D3E4F\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{CANON}\""));
        let bad = serde_json::from_str::<RepositoryUuid>("\"nope\"").unwrap_err();
        assert!(bad.to_string().contains("REPOSITORY_UUID"));
    }
}
