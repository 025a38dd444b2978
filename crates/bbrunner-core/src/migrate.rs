//! `bbrunner migrate --from-atlassian`: Atlassian runners-autoscaler config (reference §5) to
//! RunnerPool manifests, with a YAML comment for every setting that does not carry over.

use std::fmt::Write as _;

use serde_json::Value;
use thiserror::Error;

use crate::labels::{SYSTEM_LABELS, validate_label};
use crate::manifests::{Mtu, dind_networks_mtu_warning};
use crate::units::RUNNERS_PER_SCOPE;
use crate::yaml::{self, Document};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path} (line {line}, column {column}): {message}")]
pub struct MigrateError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn err(doc: &Document, pointer: &str, path: &str, message: impl Into<String>) -> MigrateError {
    let pos = doc.position(pointer);
    MigrateError {
        path: path.to_owned(),
        line: pos.line,
        column: pos.column,
        message: message.into(),
    }
}

const CONSTANTS: [&str; 4] = [
    "default_sleep_time_runner_setup",
    "default_sleep_time_runner_delete",
    "runner_api_polling_interval",
    "runner_cool_down_period",
];
const GROUP_KEYS: [&str; 8] = [
    "name",
    "workspace",
    "repository",
    "labels",
    "namespace",
    "strategy",
    "parameters",
    "resources",
];
const PARAMETERS: [&str; 6] = [
    "min",
    "max",
    "scale_up_threshold",
    "scale_down_threshold",
    "scale_up_multiplier",
    "scale_down_multiplier",
];

fn check_keys(
    doc: &Document,
    value: &Value,
    pointer: &str,
    path: &str,
    allowed: &[&str],
) -> Result<(), MigrateError> {
    if let Some(map) = value.as_object() {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let at = format!("{pointer}/{}", yaml::escape(key));
                let pos = doc.key_position(&at);
                return Err(MigrateError {
                    path: format!("{path}.{key}"),
                    line: pos.line,
                    column: pos.column,
                    message: format!("unknown setting; expected one of {}", allowed.join(", ")),
                });
            }
        }
    }
    Ok(())
}

fn number(
    doc: &Document,
    value: &Value,
    pointer: &str,
    path: &str,
) -> Result<Option<f64>, MigrateError> {
    match &value[pointer.rsplit('/').next().unwrap_or("")] {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        _ => Err(err(doc, pointer, path, "expected a number")),
    }
}

/// A DNS-label name for a pool from an autoscaler group's name.
fn pool_name(name: &str, index: usize) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_matches('-').chars().take(40).collect();
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        format!("pool-{index}")
    } else {
        slug
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Words of `text` in lines of at most `width` characters, for YAML comments.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// What a job template tells us: images and an MTU, as far as they are plain text.
#[derive(Debug, Default, PartialEq)]
struct TemplateFacts {
    dind_image: Option<String>,
    runner_image: Option<String>,
    mtu: Option<u16>,
    /// Literal `nodeSelector` entries (templated ones cannot be carried over).
    node_selector: Vec<(String, String)>,
    /// A `nodeSelector` entry written with `{{ }}`.
    node_selector_templated: bool,
    tolerations: bool,
    /// Container `resources` in the template.
    resources: bool,
}

fn template_facts(template: &str) -> TemplateFacts {
    let mut facts = TemplateFacts::default();
    // The indentation of an open `nodeSelector:` block, while in it.
    let mut selector_indent: Option<usize> = None;
    for raw in template.lines() {
        let indent = raw.len() - raw.trim_start().len();
        if let Some(open) = selector_indent {
            if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
                continue;
            }
            if indent > open {
                match raw.trim().split_once(':') {
                    Some((key, value)) if !raw.contains("{{") => facts.node_selector.push((
                        key.trim().to_owned(),
                        value.trim().trim_matches(['"', '\'']).to_owned(),
                    )),
                    _ => facts.node_selector_templated = true,
                }
                continue;
            }
            selector_indent = None;
        }
        let line = raw.trim().trim_start_matches("- ");
        match line
            .split_once(':')
            .map(|(key, rest)| (key.trim(), rest.trim()))
        {
            Some(("nodeSelector", "")) => selector_indent = Some(indent),
            Some(("nodeSelector", _)) => facts.node_selector_templated = true,
            Some(("tolerations", _)) => facts.tolerations = true,
            Some(("resources", _)) => facts.resources = true,
            _ => {}
        }
        if let Some(image) = line.strip_prefix("image:") {
            let image = image.trim().trim_matches(['"', '\'']).to_owned();
            if image.contains("{{") {
                continue;
            }
            if image.contains("dind") {
                facts.dind_image = Some(image);
            } else if image.contains("bitbucket-pipelines-runner") {
                facts.runner_image = Some(image);
            }
        }
        if let Some(i) = line.find("--mtu=") {
            let digits: String = line[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            facts.mtu = digits.parse().ok();
        }
    }
    facts
}

/// Convert an autoscaler config (and optionally its job template) to RunnerPool manifests.
pub fn migrate(config: &str, template: Option<&str>) -> Result<String, MigrateError> {
    let doc = yaml::load(config).map_err(|e| MigrateError {
        path: "(file)".into(),
        line: e.line,
        column: e.column,
        message: format!("not YAML: {}", e.message),
    })?;
    let root = &doc.value;
    check_keys(&doc, root, "", "(top)", &["constants", "groups"])?;
    let constants = &root["constants"];
    check_keys(&doc, constants, "/constants", "constants", &CONSTANTS)?;
    let Some(groups) = root["groups"].as_array().filter(|g| !g.is_empty()) else {
        return Err(err(
            &doc,
            "/groups",
            "groups",
            "no groups: the config must list at least one runner group",
        ));
    };
    let cool_down = number(
        &doc,
        constants,
        "/constants/runner_cool_down_period",
        "constants.runner_cool_down_period",
    )?;
    let polling = number(
        &doc,
        constants,
        "/constants/runner_api_polling_interval",
        "constants.runner_api_polling_interval",
    )?;
    let facts = template.map(template_facts).unwrap_or_default();

    let mut out = String::new();
    let mut names: Vec<String> = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let ptr = format!("/groups/{i}");
        let path = format!("groups[{i}]");
        check_keys(&doc, group, &ptr, &path, &GROUP_KEYS)?;
        let text = |key: &str| -> Result<Option<String>, MigrateError> {
            match &group[key] {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(err(
                    &doc,
                    &format!("{ptr}/{key}"),
                    &format!("{path}.{key}"),
                    "expected a string",
                )),
            }
        };
        let group_name = text("name")?.unwrap_or_default();
        let workspace = text("workspace")?.ok_or_else(|| {
            err(
                &doc,
                &ptr,
                &format!("{path}.workspace"),
                "missing: every group names its workspace",
            )
        })?;
        let repository = text("repository")?;
        let namespace = text("namespace")?.unwrap_or_else(|| "default".into());
        let strategy = text("strategy")?;
        if let Some(s) = &strategy
            && s != "percentageRunnersIdle"
        {
            return Err(err(
                &doc,
                &format!("{ptr}/strategy"),
                &format!("{path}.strategy"),
                format!("unknown strategy {s:?}; the autoscaler knows percentageRunnersIdle"),
            ));
        }
        let mut labels = Vec::new();
        if let Some(items) = group["labels"].as_array() {
            for (j, l) in items.iter().enumerate() {
                let at = format!("{ptr}/labels/{j}");
                let label = l.as_str().ok_or_else(|| {
                    err(
                        &doc,
                        &at,
                        &format!("{path}.labels[{j}]"),
                        "expected a string",
                    )
                })?;
                validate_label(label)
                    .map_err(|e| err(&doc, &at, &format!("{path}.labels[{j}]"), e.to_string()))?;
                if !SYSTEM_LABELS.contains(&label) {
                    labels.push(label.to_owned());
                }
            }
        }
        let params = &group["parameters"];
        check_keys(
            &doc,
            params,
            &format!("{ptr}/parameters"),
            &format!("{path}.parameters"),
            &PARAMETERS,
        )?;
        let param = |key: &str| {
            number(
                &doc,
                params,
                &format!("{ptr}/parameters/{key}"),
                &format!("{path}.parameters.{key}"),
            )
        };
        let min = param("min")?.unwrap_or(1.0);
        let max = param("max")?.unwrap_or(10.0);
        if min < 0.0 || max < 1.0 || min > max || max > f64::from(RUNNERS_PER_SCOPE) {
            return Err(err(
                &doc,
                &format!("{ptr}/parameters"),
                &format!("{path}.parameters"),
                format!(
                    "min {min} and max {max} must satisfy 0 <= min <= max <= {RUNNERS_PER_SCOPE} and max >= 1"
                ),
            ));
        }
        let ratio_settings: Vec<String> = [
            "scale_up_threshold",
            "scale_down_threshold",
            "scale_up_multiplier",
            "scale_down_multiplier",
        ]
        .iter()
        .filter_map(|k| params[*k].as_f64().map(|v| format!("{k} {v}")))
        .collect();

        let mut name = pool_name(&group_name, i);
        while names.contains(&name) {
            name = format!("{}-{i}", name.chars().take(37).collect::<String>());
        }
        names.push(name.clone());

        out.push_str("---\n");
        let _ = writeln!(
            out,
            "# From {path} {:?} of the runners-autoscaler config.",
            group_name
        );
        out.push_str("apiVersion: bbrunner.dev/v1alpha1\nkind: RunnerPool\nmetadata:\n");
        let _ = writeln!(out, "  name: {name}\n  namespace: {namespace}");
        out.push_str("spec:\n");
        let _ = writeln!(out, "  workspace: {}", yaml_string(&workspace));
        if let Some(r) = &repository {
            let _ = writeln!(out, "  repository: {}", yaml_string(r));
        }
        let _ = writeln!(out, "  labels: [{}]", labels.join(", "));
        out.push_str("  # The autoscaler read its Bitbucket credentials from its own Secret. Create this one in\n");
        out.push_str("  # the pool's namespace with oauthClientId and oauthClientSecret (or email and apiToken).\n");
        out.push_str("  credentials:\n    secretRef:\n      name: bitbucket-credentials\n");
        out.push_str("  scaling:\n");
        if min < 1.0 {
            out.push_str("    # WARNING: min 0 leaves no runner online when the pool is idle, and Bitbucket fails a\n");
            out.push_str(
                "    # step at once when no online runner has its labels. Keep min at 1 or more.\n",
            );
        }
        let _ = writeln!(out, "    min: {}\n    max: {}", min as u32, max as u32);
        out.push_str("    # percentageRunnersIdle");
        if !ratio_settings.is_empty() {
            let _ = write!(out, " ({})", ratio_settings.join(", "));
        }
        out.push_str(" does not carry over: idle-buffer keeps minIdle\n");
        out.push_str("    # runners ready and reacts within a poll (`bbrunner simulate --pool THIS_FILE` compares\n");
        out.push_str("    # both on a workload). To keep the autoscaler's behaviour, set policy: atlassian-ratio.\n");
        out.push_str("    policy: idle-buffer\n");
        out.push_str("    # One warm runner: near the autoscaler's idle cost. bbrunner's default, 3, waits less.\n");
        out.push_str("    minIdle: 1\n");
        if let Some(c) = cool_down {
            let _ = writeln!(
                out,
                "    # From constants.runner_cool_down_period ({c}s): surplus lasts this long before draining."
            );
            let _ = writeln!(out, "    scaleDownDelay: {}", duration(c));
        }
        if let Some(p) = polling {
            let _ = writeln!(
                out,
                "    # constants.runner_api_polling_interval ({p}s) does not carry over: bbrunner polls every"
            );
            out.push_str(
                "    # 15s, one list call per scope shared by all pools, within the API budget.\n",
            );
        }
        if constants.get("default_sleep_time_runner_setup").is_some()
            || constants.get("default_sleep_time_runner_delete").is_some()
        {
            out.push_str("    # default_sleep_time_runner_setup/delete do not carry over: bbrunner creates and drains\n");
            out.push_str("    # runners as the plan needs, without fixed pauses.\n");
        }
        if !group["resources"].is_null() || facts.runner_image.is_some() {
            out.push_str("  runner:\n");
            if let Some(image) = &facts.runner_image {
                out.push_str("    # From the job template's runner image.\n");
                let _ = writeln!(out, "    image: {}", yaml_string(image));
            }
            if !group["resources"].is_null() {
                let _ = writeln!(
                    out,
                    "    # From {path}.resources (the autoscaler gave them to the runner container)."
                );
                let json = serde_json::to_string(&group["resources"]).unwrap_or_default();
                let _ = writeln!(out, "    resources: {json}");
            }
        }
        if facts.resources {
            out.push_str("  # The job template's container resources do not carry over: the runner's come from the\n");
            out.push_str("  # group's resources, dind's from spec.runner.size (memory 4 GiB x size + 1 GiB).\n");
        }
        if !facts.node_selector.is_empty() || facts.node_selector_templated || facts.tolerations {
            out.push_str("  podTemplate:\n");
            if !facts.node_selector.is_empty() {
                out.push_str("    # From the job template's nodeSelector.\n");
                let entries: Vec<String> = facts
                    .node_selector
                    .iter()
                    .map(|(k, v)| format!("{}: {}", yaml_string(k), yaml_string(v)))
                    .collect();
                let _ = writeln!(out, "    nodeSelector: {{{}}}", entries.join(", "));
            }
            if facts.node_selector_templated {
                out.push_str("    # The job template's nodeSelector holds template expressions, which do not carry\n");
                out.push_str("    # over: write its values here as nodeSelector.\n");
            }
            if facts.tolerations {
                out.push_str("    # The job template's tolerations do not carry over by themselves: copy them here as\n");
                out.push_str("    # tolerations (the same list).\n");
            }
        }
        if facts.dind_image.is_some() || facts.mtu.is_some() {
            out.push_str("  dind:\n");
            if let Some(image) = &facts.dind_image {
                out.push_str("    # From the job template's docker image.\n");
                let mtu = facts.mtu.map_or(Mtu::Auto, Mtu::Fixed);
                if let Some(warning) = dind_networks_mtu_warning(image, mtu) {
                    for line in wrap(&format!("WARNING: {warning}."), 88) {
                        let _ = writeln!(out, "    # {line}");
                    }
                }
                let _ = writeln!(out, "    image: {}", yaml_string(image));
            }
            match facts.mtu {
                Some(mtu) => {
                    out.push_str("    # From --mtu in the job template.\n");
                    let _ = writeln!(out, "    mtu: {mtu}");
                }
                None => out.push_str("    mtu: auto\n"),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATLASSIAN: &str = r#"constants:
  default_sleep_time_runner_setup: 10 # value in seconds
  default_sleep_time_runner_delete: 5
  runner_api_polling_interval: 600
  runner_cool_down_period: 300
groups:
  - name: "Runner group 1"
    workspace: "{0b4a1c2e-8f3d-4e5a-9b6c-7d8e9f0a1b2c}"
    labels:
      - "my.group"
    namespace: "ci"
    strategy: "percentageRunnersIdle"
    parameters:
      min: 1
      max: 10
      scale_up_threshold: 0.5
      scale_down_threshold: 0.2
      scale_up_multiplier: 1.5
      scale_down_multiplier: 0.5
    resources:
      requests:
        memory: "2Gi"
        cpu: "1000m"
      limits:
        memory: "2Gi"
  - name: "Repo runners!"
    workspace: "acme"
    repository: "app"
    labels: ["self.hosted", "linux", "big"]
    parameters:
      min: 0
      max: 3
"#;

    #[test]
    fn the_job_template_s_placement_and_resources_carry_over_or_are_commented() {
        let template = "spec:\n  template:\n    spec:\n      nodeSelector:\n        kubernetes.io/os: linux\n        pool: \"ci-runners\"\n      tolerations:\n        - key: ci\n          effect: NoSchedule\n      containers:\n        - name: runner\n          resources:\n            requests: {memory: 4Gi}\n";
        let out = migrate(ATLASSIAN, Some(template)).unwrap();
        let first = out.split("---\n").find(|d| !d.is_empty()).unwrap();
        let doc = crate::yaml::load(first).unwrap();
        assert_eq!(
            doc.value["spec"]["podTemplate"]["nodeSelector"],
            serde_json::json!({"kubernetes.io/os": "linux", "pool": "ci-runners"}),
            "{first}"
        );
        assert!(first.contains("tolerations do not carry over"), "{first}");
        assert!(
            first.contains("container resources do not carry over"),
            "{first}"
        );
        // A templated nodeSelector is named, not guessed.
        let templated = "spec:\n  nodeSelector:\n    pool: \"{{ pool }}\"\n";
        let out = migrate(ATLASSIAN, Some(templated)).unwrap();
        assert!(
            out.contains("nodeSelector holds template expressions"),
            "{out}"
        );
        assert!(!out.contains("nodeSelector: {"), "{out}");
    }

    #[test]
    fn a_realistic_config_converts_with_comments_for_what_does_not_map() {
        let out = migrate(ATLASSIAN, None).unwrap();
        let docs: Vec<&str> = out.split("---\n").filter(|d| !d.is_empty()).collect();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].contains("name: runner-group-1\n  namespace: ci"));
        assert!(docs[0].contains("labels: [my.group]"));
        assert!(docs[0].contains("scaleDownDelay: 5m"));
        assert!(docs[0].contains("scale_up_threshold 0.5"));
        assert!(docs[0].contains("runner_api_polling_interval (600s) does not carry over"));
        assert!(docs[0].contains(
            r#"resources: {"limits":{"memory":"2Gi"},"requests":{"cpu":"1000m","memory":"2Gi"}}"#
        ));
        assert!(docs[1].contains("name: repo-runners\n  namespace: default"));
        assert!(docs[1].contains("repository: \"app\"") && docs[1].contains("labels: [big]"));
        // The group with min 0 is warned about; the other is not.
        assert_eq!(
            docs.iter()
                .filter(|d| d.contains("# WARNING: min 0 leaves no runner online"))
                .count(),
            1
        );
        // Every document loads back as the YAML it claims to be.
        for d in docs {
            let loaded = crate::yaml::load(d).unwrap();
            assert_eq!(loaded.value["kind"], "RunnerPool");
            assert!(loaded.value["spec"]["scaling"]["max"].is_number());
        }
    }

    #[test]
    fn a_job_template_supplies_images_and_mtu() {
        let template = "spec:\n  containers:\n    - name: runner\n      image: docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1\n    - name: docker\n      image: docker:20.10.7-dind\n      args: [\"--mtu=1400\"]\n    - name: x\n      image: \"{{ image }}\"\n";
        let out = migrate(ATLASSIAN, Some(template)).unwrap();
        assert!(out.contains("image: \"docker:20.10.7-dind\""));
        // The seed's pin is kept, with why its step networks keep MTU 1500.
        assert!(
            out.contains("# WARNING: docker:20.10.7-dind is Docker 20"),
            "{out}"
        );
        assert!(out.contains("mtu: 1400"));
        assert!(out.contains("bitbucket-pipelines-runner:1"));
    }

    #[test]
    fn bad_input_names_its_path_and_position() {
        let e = migrate(&ATLASSIAN.replace("max: 3", "max: lots"), None).unwrap_err();
        assert_eq!(e.path, "groups[1].parameters.max");
        assert_eq!((e.line, e.column), (32, 12));
        let e = migrate(
            &ATLASSIAN.replace("strategy: \"percentageRunnersIdle\"", "strategy: magic"),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("groups[0].strategy (line 12, column 15): unknown strategy \"magic\""),
            "{e}"
        );
        let e = migrate(
            &ATLASSIAN.replace("    namespace: \"ci\"", "    namspace: \"ci\""),
            None,
        )
        .unwrap_err();
        assert_eq!(e.path, "groups[0].namspace");
        let e = migrate(&ATLASSIAN.replace("\"my.group\"", "\"My Group\""), None).unwrap_err();
        assert_eq!(e.path, "groups[0].labels[0]");
        let e = migrate(&ATLASSIAN.replace("min: 0", "min: 5"), None).unwrap_err();
        assert!(e.message.contains("min 5 and max 3"));
        assert!(
            migrate("groups: []\n", None)
                .unwrap_err()
                .message
                .contains("no groups")
        );
        assert!(
            migrate("groups: [\n", None)
                .unwrap_err()
                .message
                .starts_with("not YAML")
        );
    }
}
