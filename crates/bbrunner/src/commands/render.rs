use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use bbrunner_core::import::parse_docker_command;
use bbrunner_core::manifests::{
    DindSpec, Mtu, PodPlacement, RenderOptions, RunnerSize, render_runner,
};
use k8s_openapi::api::core::v1::{LocalObjectReference, Toleration};

use crate::cli::RenderArgs;
use crate::{input, output};

/// `--node-selector`, `--toleration` and `--image-pull-secret`, as a pool's `podTemplate`.
fn placement(args: &RenderArgs) -> Result<PodPlacement> {
    let node_selector = args
        .node_selectors
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--node-selector {s:?}: write it as KEY=VALUE"))
        })
        .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
    let tolerations = args
        .tolerations
        .iter()
        .map(|t| {
            let (taint, effect) = match t.rsplit_once(':') {
                Some((taint, effect)) => (taint, Some(effect.to_owned())),
                None => (t.as_str(), None),
            };
            if let Some(e) = &effect
                && !matches!(e.as_str(), "NoSchedule" | "PreferNoSchedule" | "NoExecute")
            {
                return Err(anyhow!(
                    "--toleration {t:?}: the effect is NoSchedule, PreferNoSchedule or NoExecute"
                ));
            }
            let (key, value) = match taint.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (taint, None),
            };
            Ok(Toleration {
                key: Some(key.to_owned()),
                operator: Some(if value.is_some() { "Equal" } else { "Exists" }.to_owned()),
                value,
                effect,
                toleration_seconds: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pull_secrets: Vec<LocalObjectReference> = args
        .image_pull_secrets
        .iter()
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();
    Ok(PodPlacement {
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
        ..PodPlacement::default()
    })
}

pub fn run(args: &RenderArgs) -> Result<ExitCode> {
    let options = RenderOptions {
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        create_namespace: args.create_namespace,
        size: RunnerSize::parse(&args.size).context("--size")?,
        disk_gib: args.disk_gib,
        dind: DindSpec {
            image: args.dind_image.clone(),
            mtu: Mtu::parse(&args.mtu).context("--mtu")?,
            registry_mirrors: args.registry_mirrors.clone(),
            ..DindSpec::default()
        },
        runner_image: args.runner_image.clone(),
        placement: placement(args)?,
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
