use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use bbrunner_core::import::parse_docker_command;

use crate::cli::DataFormat;
use crate::{input, output};

pub fn run(file: Option<&Path>, format: DataFormat, reveal_secret: bool) -> Result<ExitCode> {
    let text = input::read_text(file)?;
    let command = parse_docker_command(&text)?;
    let record = command.output(reveal_secret);
    let rendered = match format {
        DataFormat::Json => output::json(&record)?,
        DataFormat::Yaml => output::yaml(&record)?,
    };
    std::io::stdout().write_all(rendered.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
