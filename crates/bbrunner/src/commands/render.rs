use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bbrunner_core::import::parse_docker_command;
use bbrunner_core::manifests::{DindSpec, Mtu, RenderOptions, RunnerSize, render_runner};

use crate::cli::RenderArgs;
use crate::{input, output};

pub fn run(args: &RenderArgs) -> Result<ExitCode> {
    let options = RenderOptions {
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        create_namespace: args.create_namespace,
        size: RunnerSize::parse(&args.size).context("--size")?,
        dind: DindSpec {
            image: args.dind_image.clone(),
            mtu: Mtu::parse(&args.mtu).context("--mtu")?,
            ..DindSpec::default()
        },
        runner_image: args.runner_image.clone(),
    };
    let text = input::read_text(args.docker_command.as_deref())?;
    let command = parse_docker_command(&text).context("--docker-command")?;
    let rendered = render_runner(&command, &options)?;

    let mut documents = Vec::new();
    if let Some(ns) = &rendered.namespace {
        documents.push(serde_json::to_value(ns)?);
    }
    documents.push(serde_json::to_value(&rendered.secret)?);
    documents.push(serde_json::to_value(&rendered.deployment)?);
    let yaml = output::yaml_documents(&documents)?;
    for warning in &rendered.warnings {
        eprintln!("warning: {warning}");
    }
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
