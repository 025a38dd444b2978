//! Serialising results for people and for `kubectl`.

use anyhow::{Context, Result};
use serde::Serialize;

/// One YAML document.
pub fn yaml<T: Serialize>(value: &T) -> Result<String> {
    serde_saphyr::to_string(value).context("cannot serialise YAML")
}

/// A multi-document YAML stream, as `kubectl apply -f -` reads it.
pub fn yaml_documents(documents: &[serde_json::Value]) -> Result<String> {
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n");
        out.push_str(&yaml(doc)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

pub fn json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}
