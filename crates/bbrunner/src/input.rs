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
