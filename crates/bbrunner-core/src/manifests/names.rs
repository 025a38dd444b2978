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

/// A label value: at most 63 characters of letters, digits, '-', '_' and '.', starting and
/// ending with a letter or digit; or empty.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// A label key: a name as a label value (not empty), after an optional DNS subdomain prefix
/// and '/'.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    !name.is_empty()
        && is_label_value(name)
        && prefix.is_none_or(|p| validate_dns("prefix", p, 253, true).is_ok())
}

/// A node selector's keys and values, and tolerations' keys, values, operators and effects,
/// as the API server checks them: refused here with the field, not later with the pod.
pub(crate) fn validate_placement(placement: &PodPlacement) -> Result<(), ManifestError> {
    let invalid = |field: String, value: &str, reason: &'static str| {
        Err(ManifestError::InvalidLabel {
            field,
            value: value.to_owned(),
            reason,
        })
    };
    const KEY: &str = "a label key is a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, after an optional DNS prefix and '/' (e.g. kubernetes.io/arch)";
    const VALUE: &str = "a label value is empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
    for (key, value) in placement.node_selector.iter().flatten() {
        if !is_label_key(key) {
            return invalid("nodeSelector key".to_owned(), key, KEY);
        }
        if !is_label_value(value) {
            return invalid(format!("nodeSelector[{key}]"), value, VALUE);
        }
    }
    for (i, t) in placement.tolerations.iter().flatten().enumerate() {
        let key = t.key.as_deref().unwrap_or("");
        let operator = t.operator.as_deref().unwrap_or("Equal");
        if !key.is_empty() && !is_label_key(key) {
            return invalid(format!("tolerations[{i}].key"), key, KEY);
        }
        if key.is_empty() && operator != "Exists" {
            return invalid(
                format!("tolerations[{i}].key"),
                key,
                "an empty key tolerates every taint and needs the operator Exists",
            );
        }
        if !matches!(operator, "Equal" | "Exists") {
            return invalid(
                format!("tolerations[{i}].operator"),
                operator,
                "the operator is Equal or Exists",
            );
        }
        let value = t.value.as_deref().unwrap_or("");
        if operator == "Exists" && !value.is_empty() {
            return invalid(
                format!("tolerations[{i}].value"),
                value,
                "the operator Exists takes no value",
            );
        }
        if !is_label_value(value) {
            return invalid(format!("tolerations[{i}].value"), value, VALUE);
        }
        if let Some(effect) = t.effect.as_deref()
            && !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            return invalid(
                format!("tolerations[{i}].effect"),
                effect,
                "the effect is NoSchedule, PreferNoSchedule or NoExecute",
            );
        }
    }
    Ok(())
}

/// Directories an emptyDir must never hide: the system's, and the ones the pod already
/// mounts (dind's socket and data, the step's logs).
const RESERVED_DIRECTORIES: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
    "/sys", "/usr", "/var",
];

/// The working directory, mounted as an emptyDir in both containers: an absolute path, not a
/// system directory, and apart from the pod's other mounts (neither one of them, nor inside
/// or above one).
pub(crate) fn validate_working_directory(path: &str) -> Result<(), ManifestError> {
    let fail = |reason: &'static str| {
        Err(ManifestError::InvalidWorkingDirectory {
            path: path.to_owned(),
            reason,
        })
    };
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    if !path.starts_with('/') || parts.iter().any(|p| matches!(*p, "." | "..")) {
        return fail("it must be an absolute path without . or .. (e.g. /tmp)");
    }
    let normal = format!(
        "/{}",
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    );
    if RESERVED_DIRECTORIES.contains(&normal.as_str()) {
        return fail("an emptyDir there would hide a system directory");
    }
    let within = |outer: &str, inner: &str| {
        inner == outer || inner.starts_with(&format!("{}/", outer.trim_end_matches('/')))
    };
    for mounted in [
        DOCKER_SOCKET_DIRECTORY,
        DOCKER_DATA_DIRECTORY,
        DOCKER_CONTAINERS_DIRECTORY,
        POD_INFO_DIRECTORY,
    ] {
        if within(mounted, &normal) || within(&normal, mounted) {
            return fail(
                "it overlaps the pod's own mounts (/var/run, /var/lib/docker, /etc/bbrunner/pod)",
            );
        }
    }
    Ok(())
}
