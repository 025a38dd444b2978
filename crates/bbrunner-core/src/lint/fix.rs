//! `lint --fix`: what is missing of a step's docker service MTU fix, written into the file
//! with nothing else of it touched.

use crate::yaml::{self, Document};
use serde_json::Value;

use super::*;

/// Make the step's `docker` service pass `--mtu=N` to its daemon: write whatever is missing of
/// `type: docker`, an image that reads `DOCKER_OPTS` (`images.preferred()`) and
/// `DOCKER_OPTS: "--mtu=N"`, touching nothing else of the file. A fix that would not take
/// effect is never made: an image not known to read `DOCKER_OPTS` is the user's to change.
pub fn fix_docker_mtu(
    text: &str,
    mtu: u16,
    images: &DockerServiceImages,
) -> Result<String, NotFixed> {
    let doc = yaml::load(text).map_err(|_| NotFixed::Layout)?;
    // Each level we may add to must be absent or a mapping.
    let definitions = &doc.value["definitions"];
    let services = &definitions["services"];
    let docker = &services["docker"];
    let variables = &docker["variables"];
    let mapping_or_absent = |v: &Value| v.is_null() || v.is_object();
    if !doc.value.is_object()
        || ![definitions, services, docker, variables]
            .into_iter()
            .all(mapping_or_absent)
    {
        return Err(NotFixed::Layout);
    }
    match &docker["image"] {
        Value::Null => {}
        Value::String(image) if images.read_docker_opts(image) => {}
        Value::String(image) => return Err(NotFixed::ImageIgnoresDockerOpts(image.clone())),
        _ => return Err(NotFixed::Layout),
    }
    if !matches!(&docker["type"], Value::Null | Value::String(_))
        || docker["type"].as_str().is_some_and(|t| t != "docker")
    {
        return Err(NotFixed::Layout);
    }
    // An existing DOCKER_OPTS is the user's: kept if it passes an MTU, never rewritten.
    let opts_value = &variables["DOCKER_OPTS"];
    if !opts_value.is_null() && !opts_value.as_str().is_some_and(|o| o.contains("--mtu")) {
        return Err(NotFixed::DockerOptsSet);
    }
    let mut docker_keys: Vec<(&str, String)> = Vec::new();
    if docker["type"].is_null() {
        docker_keys.push(("type", "docker".to_owned()));
    }
    if docker["image"].is_null() {
        docker_keys.push(("image", images.preferred().to_owned()));
    }
    let opts = opts_value.is_null().then(|| format!("\"--mtu={mtu}\""));
    if docker_keys.is_empty() && opts.is_none() {
        return Err(NotFixed::DockerOptsSet);
    }
    let fixed =
        insert_docker_service(text, &doc, &docker_keys, opts.as_deref()).ok_or(NotFixed::Layout)?;
    // Text edits guess at indentation; keep one only if it means the old document plus the
    // keys written, so that an unusual layout is left alone rather than broken.
    let mut expected = doc.value.clone();
    let target = &mut expected["definitions"]["services"]["docker"];
    for (key, value) in &docker_keys {
        target[*key] = Value::from(value.as_str());
    }
    if opts.is_some() {
        target["variables"]["DOCKER_OPTS"] = Value::from(format!("--mtu={mtu}"));
    }
    let reloaded = yaml::load(&fixed).map_err(|_| NotFixed::Layout)?;
    if reloaded.value == expected {
        Ok(fixed)
    } else {
        Err(NotFixed::Layout)
    }
}

/// Write `docker_keys` under `definitions.services.docker` and `DOCKER_OPTS: <opts>` under
/// its `variables`, creating the levels that are missing. Block-style files only.
pub(crate) fn insert_docker_service(
    text: &str,
    doc: &Document,
    docker_keys: &[(&str, String)],
    opts: Option<&str>,
) -> Option<String> {
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    // The position of a key is where its line starts (block style).
    let key = |pointer: &str| doc.keys.get(pointer).copied();
    // Children of a mapping are indented as its existing children are, else two more.
    let child_indent = |pointer: &str, parent_column: usize| {
        let prefix = format!("{pointer}/");
        doc.keys
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .map(|(_, pos)| pos.column - 1)
            .min()
            .unwrap_or(parent_column - 1 + 2)
    };
    let opts_line = |indent: usize| opts.map(|o| format!("{}DOCKER_OPTS: {o}", " ".repeat(indent)));
    // (line after which to insert, lines), applied bottom-up so line numbers stay valid.
    let mut inserts: Vec<(usize, Vec<String>)> = Vec::new();
    let docker_ptr = "/definitions/services/docker";
    let variables_ptr = "/definitions/services/docker/variables";
    let variables_exist = doc.value.pointer(variables_ptr).is_some();
    if variables_exist && opts.is_some() {
        let at = key(variables_ptr)?;
        inserts.push((
            at.line,
            opts_line(child_indent(variables_ptr, at.column))
                .into_iter()
                .collect(),
        ));
    }
    // The docker level's own additions, at indent `i`.
    let docker_block = |i: usize| -> Vec<String> {
        let mut block: Vec<String> = docker_keys
            .iter()
            .map(|(k, v)| format!("{}{k}: {v}", " ".repeat(i)))
            .collect();
        if !variables_exist && opts.is_some() {
            block.push(format!("{}variables:", " ".repeat(i)));
            block.extend(opts_line(i + 2));
        }
        block
    };
    if doc.value.pointer(docker_ptr).is_some() {
        let at = key(docker_ptr)?;
        let block = docker_block(child_indent(docker_ptr, at.column));
        if !block.is_empty() {
            inserts.push((at.line, block));
        }
    } else {
        // Under the deepest of definitions/services that exists, the missing levels.
        const PATH: [&str; 2] = ["definitions", "services"];
        let existing = (1..=PATH.len()).rev().find_map(|depth| {
            let pointer: String = PATH[..depth].iter().map(|k| format!("/{k}")).collect();
            doc.value.pointer(&pointer).map(|_| (depth, pointer))
        });
        let (missing, indent, after) = match existing {
            Some((depth, pointer)) => {
                let at = key(&pointer)?;
                (
                    &PATH[depth..],
                    child_indent(&pointer, at.column),
                    Some(at.line),
                )
            }
            None => (&PATH[..], 0, None),
        };
        let mut block: Vec<String> = missing
            .iter()
            .enumerate()
            .map(|(d, k)| format!("{}{k}:", " ".repeat(indent + 2 * d)))
            .collect();
        let docker_indent = indent + 2 * missing.len();
        block.push(format!("{}docker:", " ".repeat(docker_indent)));
        block.extend(docker_block(docker_indent + 2));
        let after = match after {
            Some(line) => line,
            // No definitions: before `pipelines:` if it starts a line, else at the end.
            None => match key("/pipelines") {
                Some(at) if at.column == 1 => at.line - 1,
                _ => lines.len(),
            },
        };
        inserts.push((after, block));
    }
    inserts.sort_by_key(|insert| std::cmp::Reverse(insert.0));
    for (after, block) in inserts {
        let at = after.min(lines.len());
        // Lines go after a line that may be the file's last, without its newline.
        if let Some(before) = at.checked_sub(1).and_then(|i| lines.get_mut(i))
            && !before.ends_with('\n')
        {
            before.push_str(newline);
        }
        for (i, line) in block.into_iter().enumerate() {
            lines.insert(at + i, format!("{line}{newline}"));
        }
    }
    Some(lines.concat())
}
