//! Reading user input from a file or standard input.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// Read `path`, or standard input when it is `-` or absent.
pub fn read_text(path: Option<&Path>) -> Result<String> {
    match path {
        Some(p) if p != Path::new("-") => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        }
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            Ok(text)
        }
    }
}

/// Read a YAML file, reading no further than the budget every YAML we read is held to: a
/// huge file (or an endless pipe) is refused, not loaded.
pub fn read_yaml(path: &Path) -> Result<String> {
    let limit = bbrunner_core::yaml::MAX_INPUT_BYTES;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    file.take(limit as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        text.len() <= limit,
        "{} is more than the {limit} bytes a YAML file may have; refusing it",
        path.display()
    );
    Ok(text)
}

/// Every document of a YAML stream of manifests, held to the budget every YAML we read is
/// held to ([`bbrunner_core::yaml`]): a bomb in a `--pools` or `--pool` file is refused
/// before it is expanded.
pub fn yaml_documents(text: &str) -> Result<Vec<serde_json::Value>> {
    use bbrunner_core::yaml::{MAX_INPUT_BYTES, MAX_NODES, MAX_SCALAR_BYTES};
    anyhow::ensure!(
        text.len() <= MAX_INPUT_BYTES,
        "{} bytes is more than the {MAX_INPUT_BYTES} a manifest file may have",
        text.len()
    );
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_NODES;
    budget.max_total_scalar_bytes = MAX_SCALAR_BYTES;
    budget.max_recorded_anchor_bytes = MAX_SCALAR_BYTES;
    budget.max_reader_input_bytes = Some(MAX_INPUT_BYTES);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    serde_saphyr::from_multiple_with_options(text, options).map_err(anyhow::Error::from)
}
