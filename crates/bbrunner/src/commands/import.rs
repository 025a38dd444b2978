use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, ensure};
use bbrunner_core::import::parse_docker_command;
use bbrunner_core::manifests::registration_secret_data;
use serde_json::json;

use crate::cli::DataFormat;
use crate::{input, output};

pub fn run(file: Option<&Path>, format: DataFormat, reveal_secret: bool) -> Result<ExitCode> {
    let text = input::read_text(file)?;
    let command = parse_docker_command(&text)?;
    let record = command.output(reveal_secret);
    let rendered = match format {
        DataFormat::Json => output::json(&record)?,
        DataFormat::Yaml => output::yaml(&record)?,
        DataFormat::Secret => {
            ensure!(
                reveal_secret,
                "--format secret writes the OAuth client secret into the manifest; add --reveal-secret to confirm, and keep the output out of version control"
            );
            let registration = &command.registration;
            // stringData: no base64, so no trailing-newline pitfall.
            output::yaml(&json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": format!("runner-{}", registration.runner_uuid.bare()),
                    "labels": {"app.kubernetes.io/part-of": "bbrunner"},
                },
                "type": "Opaque",
                "stringData": registration_secret_data(registration, &[]),
            }))?
        }
    };
    std::io::stdout().write_all(rendered.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
