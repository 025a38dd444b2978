//! The house rules the code keeps, checked on its sources: no import circles among the
//! modules of any crate, and no source file over 800 lines (tests aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path below its crate's `src` (`operator::reconcile`); `None` for test-only
/// files and binaries' entry points.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    if parts.last().is_some_and(|p| p == "tests" || p == "fixture") {
        return None;
    }
    Some(parts)
}

/// The text of a file before its unit tests.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The module paths a file of module `here` refers to (`crate::a::b`, `super::c`).
fn references(text: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // `super` is the parent module, whether the file is `a/b.rs` or `a/b/mod.rs`.
    let parent = here[..here.len().saturating_sub(1)].to_vec();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: Vec<String> = text[at + prefix.len()..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .take_while(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .map(str::to_owned)
                .collect();
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
    }
    out
}

fn circles(krate: &Path) -> Vec<Vec<String>> {
    let src = krate.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .filter_map(|f| Some((module_of(&src, f)?.join("::"), f.clone())))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, file) in &modules {
        let here: Vec<String> = name
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for reference in references(&code(file), &here) {
            // The deepest module the path names.
            let target = (1..=reference.len())
                .rev()
                .map(|k| reference[..k].join("::"))
                .find(|t| modules.contains_key(t));
            if let Some(target) = target {
                let nested = target.starts_with(&format!("{name}::"))
                    || name.starts_with(&format!("{target}::"))
                    || target == *name
                    || name.is_empty()
                    || target.is_empty();
                if !nested {
                    edges.entry(name.clone()).or_default().insert(target);
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    fn walk(
        node: &str,
        stack: &mut Vec<String>,
        edges: &BTreeMap<String, BTreeSet<String>>,
        found: &mut BTreeSet<Vec<String>>,
        done: &mut BTreeSet<String>,
    ) {
        for next in edges.get(node).into_iter().flatten() {
            if let Some(at) = stack.iter().position(|s| s == next) {
                let mut circle = stack[at..].to_vec();
                let start = (0..circle.len())
                    .min_by_key(|&i| circle[i].clone())
                    .unwrap();
                circle.rotate_left(start);
                found.insert(circle);
            } else if !done.contains(next) {
                stack.push(next.clone());
                walk(next, stack, edges, found, done);
                stack.pop();
            }
        }
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        walk(node, &mut vec![node.clone()], &edges, &mut found, &mut done);
    }
    found.into_iter().collect()
}

fn crates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(testbed::cluster::workspace().join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    out.sort();
    out
}

#[test]
fn no_crate_s_modules_import_each_other_in_a_circle() {
    let mut all = Vec::new();
    for krate in crates() {
        for circle in circles(&krate) {
            all.push(format!("{}: {}", krate.display(), circle.join(" -> ")));
        }
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}

#[test]
fn no_source_file_is_over_800_lines_tests_aside() {
    let mut long = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        sources(&krate.join("src"), &mut files);
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name == "tests.rs" {
                continue;
            }
            let lines = code(&file).lines().count();
            if lines > 800 {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(long.is_empty(), "over 800 lines:\n{}", long.join("\n"));
}
