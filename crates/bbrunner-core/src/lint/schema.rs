//! The official pipelines schema's verdicts, at the offending node, and the near-miss keys
//! Bitbucket would silently ignore.

use crate::yaml::{Document, escape};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::OnceLock;

use super::*;

pub(crate) fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the vendored schema is JSON");
        jsonschema::validator_for(&schema).expect("the vendored schema compiles")
    })
}

pub(crate) fn shorten(text: String) -> String {
    const MAX: usize = 160;
    if text.chars().count() <= MAX {
        return text;
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

pub(crate) fn depth(error: &jsonschema::ValidationError<'_>) -> usize {
    error.instance_path().to_string().matches('/').count()
}

/// The most specific errors behind an error: for `oneOf`/`anyOf`, those of the branch that got
/// deepest into the document (the one the author most likely meant), recursively.
pub(crate) fn leaves<'a>(
    error: &'a jsonschema::ValidationError<'a>,
    out: &mut Vec<&'a jsonschema::ValidationError<'a>>,
) {
    use jsonschema::error::ValidationErrorKind as K;
    if let K::OneOfNotValid { context } | K::AnyOf { context } = error.kind() {
        let branch_depth = |branch: &Vec<jsonschema::ValidationError<'static>>| {
            branch.iter().map(depth).max().unwrap_or(0)
        };
        let best = context.iter().filter(|b| !b.is_empty()).max_by(|a, b| {
            branch_depth(a)
                .cmp(&branch_depth(b))
                .then(b.len().cmp(&a.len()))
        });
        if let Some(best) = best
            && branch_depth(best) > depth(error)
        {
            for e in best {
                leaves(e, out);
            }
            return;
        }
    }
    out.push(error);
}

/// Every property name the official schema knows, anywhere.
pub(crate) fn schema_vocabulary() -> &'static BTreeSet<String> {
    static WORDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    WORDS.get_or_init(|| {
        fn collect(node: &Value, out: &mut BTreeSet<String>) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::Object(props)) = map.get("properties") {
                        out.extend(props.keys().cloned());
                    }
                    map.values().for_each(|v| collect(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        let schema: Value = serde_json::from_str(SCHEMA).expect("the vendored schema is JSON");
        let mut words = BTreeSet::new();
        collect(&schema, &mut words);
        words
    })
}

/// Edit distance with adjacent transpositions (optimal string alignment).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Maps whose keys are the user's own names (branches, custom pipelines, services, caches,
/// variables, and `definitions`, where files keep anchors under names of their own): their keys
/// are not checked for typos.
pub(crate) const USER_NAMED: [&str; 9] = [
    "definitions",
    "branches",
    "tags",
    "bookmarks",
    "custom",
    "pull-requests",
    "caches",
    "services",
    "variables",
];

/// Keys one edit away from a key the schema knows: Bitbucket ignores them silently, and
/// `runs_on` for `runs-on` sends a step to Atlassian's cloud instead of your runners.
pub(crate) fn typo_diagnostics(doc: &Document) -> Vec<Diagnostic> {
    let vocabulary = schema_vocabulary();
    let mut out = Vec::new();
    for (pointer, pos) in &doc.keys {
        let Some((parent, raw)) = pointer.rsplit_once('/') else {
            continue;
        };
        let key = raw.replace("~1", "/").replace("~0", "~");
        let under_user_names = parent
            .rsplit('/')
            .next()
            .is_some_and(|p| USER_NAMED.contains(&p));
        if under_user_names || key.len() < 4 || vocabulary.contains(&key) {
            continue;
        }
        let Some(known) = vocabulary.iter().find(|w| edit_distance(&key, w) == 1) else {
            continue;
        };
        let consequence = if known == "runs-on" {
            ": without runs-on the step runs in Bitbucket's cloud, not on your runners"
        } else {
            ""
        };
        out.push(diag(
            *pos,
            Severity::Warning,
            "unknown-key",
            format!(
                "unknown key {key:?}, which Bitbucket ignores; did you mean {known:?}{consequence}"
            ),
            Some(format!("rename {key} to {known}")),
        ));
    }
    out
}

/// Schema violations, each at the position of the offending node (or unexpected key).
pub(crate) fn schema_diagnostics(doc: &Document) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let top: Vec<jsonschema::ValidationError<'_>> = validator().iter_errors(&doc.value).collect();
    let mut specific = Vec::new();
    for error in &top {
        leaves(error, &mut specific);
    }
    for error in specific {
        let pointer = error.instance_path().to_string();
        let (pos, message) = match error.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                let first = unexpected.first().cloned().unwrap_or_default();
                let key = format!("{pointer}/{}", escape(&first));
                (
                    doc.key_position(&key),
                    format!(
                        "unexpected key {}",
                        unexpected
                            .iter()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }
            _ => (doc.position(&pointer), error.to_string()),
        };
        let at = if pointer.is_empty() {
            "the document".to_owned()
        } else {
            pointer.clone()
        };
        out.push(diag(
            pos,
            Severity::Error,
            "schema",
            shorten(format!("{at}: {message}")),
            None,
        ));
    }
    out
}
