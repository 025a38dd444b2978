//! Kubernetes' rules for names and environment variable names, as the API server applies them.

use super::*;

/// A DNS-1123 label: what Kubernetes requires of namespaces, and what a name must be to serve
/// as a label value too.
pub fn validate_dns_label(field: &'static str, value: &str) -> Result<(), ManifestError> {
    validate_dns(field, value, 63, false)
}

/// A DNS-1123 subdomain: what Kubernetes requires of most object names.
pub fn validate_dns_subdomain(field: &'static str, value: &str) -> Result<(), ManifestError> {
    validate_dns(field, value, 253, true)
}

pub(crate) fn validate_dns(
    field: &'static str,
    value: &str,
    max: usize,
    dots: bool,
) -> Result<(), ManifestError> {
    let fail = |reason| ManifestError::InvalidName {
        field,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(fail("it is empty"));
    }
    if value.len() > max {
        return Err(fail(if dots {
            "it is longer than 253 characters"
        } else {
            "it is longer than 63 characters"
        }));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    if !value.chars().all(allowed) {
        return Err(fail(
            "use lowercase letters, digits and '-' (e.g. bitbucket-runners)",
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !value.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(fail("it must start and end with a letter or digit"));
    }
    Ok(())
}

pub(crate) fn validate_env_name(name: &str) -> Result<(), ManifestError> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ManifestError::InvalidEnvName(name.to_owned()))
    }
}
