//! Which pipeline a push (or a pull request, or a run by hand) starts, read from its
//! `bitbucket-pipelines.yml`: its stages in order, each with the steps that run together and
//! the labels they ask for. Read with the budget of every YAML we read ([`crate::yaml`]).

use serde_json::Value;
use thiserror::Error;

use super::glob;
use super::{MAX_PIPELINE_STEPS, PlannedStep};
use crate::yaml;

/// What started a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A push to a branch: `pipelines.branches`, else `pipelines.default`.
    Branch(String),
    /// A push of a tag: `pipelines.tags`.
    Tag(String),
    /// A pull request from `source`: `pipelines.pull-requests`, matched on the source branch.
    PullRequest { source: String },
    /// A pipeline run by hand or on a schedule: `pipelines.custom.<name>`.
    Custom(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefinitionError {
    #[error("bitbucket-pipelines.yml is not YAML within budget: {0}")]
    Yaml(#[from] yaml::YamlError),
    #[error(
        "bitbucket-pipelines.yml: the pipeline has {count} steps, more than the {MAX_PIPELINE_STEPS} Bitbucket runs"
    )]
    TooManySteps { count: usize },
}

/// The stages of the pipeline `trigger` starts, by `text` (a `bitbucket-pipelines.yml`):
/// `None` when it starts none. Steps of a `parallel` group form one stage; the steps of a
/// `stage` run one after another; a step run by hand (`trigger: manual`) and all after it
/// are left out, since nobody can say when a person will start them.
pub fn resolve(
    text: &str,
    trigger: &Trigger,
) -> Result<Option<Vec<Vec<PlannedStep>>>, DefinitionError> {
    let doc = yaml::load(text)?;
    let pipelines = &doc.value["pipelines"];
    let chosen = match trigger {
        Trigger::Branch(name) => {
            by_name(&pipelines["branches"], name).or_else(|| non_null(&pipelines["default"]))
        }
        Trigger::Tag(name) => by_name(&pipelines["tags"], name),
        Trigger::PullRequest { source } => by_name(&pipelines["pull-requests"], source),
        Trigger::Custom(name) => non_null(&pipelines["custom"][name.as_str()]),
    };
    let Some(Value::Array(items)) = chosen else {
        return Ok(None);
    };
    let default_runs_on = &doc.value["options"]["runs-on"];
    let mut stages: Vec<Vec<PlannedStep>> = Vec::new();
    let mut count = 0;
    'items: for item in items {
        let groups: Vec<Vec<&Value>> = if let Some(step) = item.get("step") {
            vec![vec![step]]
        } else if let Some(parallel) = item.get("parallel") {
            // `parallel: [steps]`, or `parallel: {steps: [...], fail-fast: ...}`.
            let list = parallel.get("steps").unwrap_or(parallel);
            vec![steps_of(list)]
        } else if let Some(stage) = item.get("stage") {
            steps_of(&stage["steps"])
                .into_iter()
                .map(|s| vec![s])
                .collect()
        } else {
            // `variables` of a custom pipeline, and anything else: no runner needed.
            continue;
        };
        for group in groups {
            if group.is_empty() {
                continue;
            }
            count += group.len();
            if count > MAX_PIPELINE_STEPS {
                return Err(DefinitionError::TooManySteps { count });
            }
            if group.iter().any(|s| s["trigger"] == "manual") {
                break 'items;
            }
            stages.push(
                group
                    .into_iter()
                    .map(|step| planned(step, default_runs_on))
                    .collect(),
            );
        }
    }
    Ok(Some(stages))
}

fn non_null(value: &Value) -> Option<&Value> {
    (!value.is_null()).then_some(value)
}

/// The section for `name` among `sections` (branch, tag or source-branch keys): the key equal
/// to it, else the most specific pattern that matches it (the first such in the file on a tie).
fn by_name<'a>(sections: &'a Value, name: &str) -> Option<&'a Value> {
    let sections = sections.as_object()?;
    if let Some(exact) = sections.get(name) {
        return Some(exact);
    }
    let mut best: Option<(usize, &Value)> = None;
    for (pattern, section) in sections {
        if glob::is_pattern(pattern) && glob::matches(pattern, name) {
            let specificity = glob::specificity(pattern);
            if best.is_none_or(|(most, _)| specificity > most) {
                best = Some((specificity, section));
            }
        }
    }
    best.map(|(_, section)| section)
}

/// The `step` objects of a list of `- step:` items.
fn steps_of(list: &Value) -> Vec<&Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("step"))
        .collect()
}

/// A step's name and labels: its `runs-on`, else the file's `options.runs-on`; none (a cloud
/// step) unless they include `self.hosted`.
fn planned(step: &Value, default_runs_on: &Value) -> PlannedStep {
    let runs_on = match &step["runs-on"] {
        Value::Null => default_runs_on,
        given => given,
    };
    let labels: Vec<String> = match runs_on {
        Value::String(label) => vec![label.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let self_hosted = labels.iter().any(|l| l == "self.hosted");
    PlannedStep {
        name: step["name"].as_str().unwrap_or_default().to_owned(),
        labels: if self_hosted { labels } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
options:
  runs-on: [self.hosted, linux]
definitions:
  steps:
    - step: &test
        name: unit
        runs-on: [self.hosted, linux, build]
        script: [make test]
pipelines:
  default:
    - step: {name: build, script: [make]}
  branches:
    main:
      - step: {name: build, runs-on: [self.hosted, build], script: [make]}
      - parallel:
          fail-fast: true
          steps:
            - step: *test
            - step: {<<: *test, name: lint}
            - step: {name: docs, runs-on: [linux], script: [make docs]}
      - stage:
          name: ship
          steps:
            - step: {name: deploy, runs-on: [self.hosted, deploy], script: [./deploy]}
            - step: {name: smoke, script: [./smoke]}
      - step: {name: prod, trigger: manual, script: [./prod]}
      - step: {name: after, script: [true]}
    'feature/*':
      - step: {name: feature, script: [make]}
    '**':
      - step: {name: anything, script: [make]}
    '{release,hotfix}/**':
      - step: {name: release, script: [make]}
  tags:
    'v*':
      - step: {name: tagged, script: [make]}
  pull-requests:
    '**':
      - parallel:
          - step: {name: pr-a, script: [a]}
          - step: {name: pr-b, script: [b]}
  custom:
    nightly:
      - variables: [{name: LEVEL}]
      - step: {name: soak, script: [soak]}
"#;

    fn names(stages: &[Vec<PlannedStep>]) -> Vec<Vec<&str>> {
        stages
            .iter()
            .map(|s| s.iter().map(|p| p.name.as_str()).collect())
            .collect()
    }

    fn resolved(trigger: Trigger) -> Option<Vec<Vec<PlannedStep>>> {
        resolve(FILE, &trigger).unwrap()
    }

    #[test]
    fn a_branch_runs_its_stages_parallel_groups_together_and_stops_at_a_manual_step() {
        let stages = resolved(Trigger::Branch("main".into())).unwrap();
        assert_eq!(
            names(&stages),
            [
                vec!["build"],
                vec!["unit", "lint", "docs"],
                vec!["deploy"],
                vec!["smoke"]
            ]
        );
        assert_eq!(stages[0][0].labels, ["self.hosted", "build"]);
        // The anchor's labels reach the aliased and the merged step.
        assert_eq!(stages[1][1].labels, ["self.hosted", "linux", "build"]);
        // A step whose runs-on lacks self.hosted runs in Bitbucket's cloud.
        assert!(stages[1][2].labels.is_empty());
        // A step without runs-on takes the file's options.runs-on.
        assert_eq!(stages[3][0].labels, ["self.hosted", "linux"]);
    }

    #[test]
    fn exact_names_beat_patterns_and_specific_patterns_beat_general_ones() {
        let first = |t| names(&resolved(t).unwrap())[0][0].to_owned();
        assert_eq!(first(Trigger::Branch("feature/login".into())), "feature");
        assert_eq!(first(Trigger::Branch("feature/a/b".into())), "anything");
        assert_eq!(first(Trigger::Branch("hotfix/1/2".into())), "release");
        assert_eq!(first(Trigger::Tag("v1.2".into())), "tagged");
        assert_eq!(
            resolved(Trigger::Tag("nope".into())),
            None,
            "tags have no default"
        );
        assert_eq!(
            names(
                &resolved(Trigger::PullRequest {
                    source: "x/y".into()
                })
                .unwrap()
            ),
            [vec!["pr-a", "pr-b"]]
        );
        assert_eq!(first(Trigger::Custom("nightly".into())), "soak");
        assert_eq!(resolved(Trigger::Custom("weekly".into())), None);
    }

    #[test]
    fn default_serves_branches_no_section_names() {
        let text = "pipelines:\n  default:\n    - step: {name: only, script: [x]}\n";
        let stages = resolve(text, &Trigger::Branch("any".into()))
            .unwrap()
            .unwrap();
        assert_eq!(names(&stages), [vec!["only"]]);
        assert!(stages[0][0].labels.is_empty(), "no runs-on: a cloud step");
        assert_eq!(
            resolve("image: x\n", &Trigger::Branch("main".into())),
            Ok(None)
        );
    }

    #[test]
    fn hostile_files_are_refused_within_budget() {
        let many: String = (0..150)
            .map(|i| format!("    - step: {{name: s{i}, script: [x]}}\n"))
            .collect();
        let text = format!("pipelines:\n  default:\n{many}");
        assert_eq!(
            resolve(&text, &Trigger::Branch("main".into())),
            Err(DefinitionError::TooManySteps { count: 101 })
        );
        let mut bomb = format!("a: &a \"{}\"\n", "x".repeat(10_000));
        for (name, of) in [("b", "a"), ("c", "b"), ("d", "c")] {
            let refs = vec![format!("*{of}"); 30].join(", ");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        assert!(matches!(
            resolve(&bomb, &Trigger::Branch("main".into())),
            Err(DefinitionError::Yaml(_))
        ));
        // Wrong shapes are read as far as they make sense, never a panic.
        for odd in [
            "pipelines: 3\n",
            "pipelines: {default: {step: 1}}\n",
            "pipelines: {default: [1, {parallel: 2}, {stage: {steps: 3}}, {step: {runs-on: 4}}]}\n",
        ] {
            resolve(odd, &Trigger::Branch("main".into())).unwrap();
        }
    }
}
