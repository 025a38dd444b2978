//! YAML to JSON with the source position of every node, so that schema errors (which speak
//! JSON pointers) and our rules can point at a line and column. Anchors and aliases are
//! resolved, and `<<` merge keys applied, as Bitbucket's YAML 1.1 parser does.

use std::collections::{BTreeMap, HashMap};

use granit_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

/// A line and a column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A loaded document: its JSON value and where each node (by JSON pointer) and each mapping
/// key (by the pointer of its value) starts.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub value: Value,
    pub nodes: BTreeMap<String, Pos>,
    pub keys: BTreeMap<String, Pos>,
}

impl Document {
    /// The position of `pointer`, or of its nearest ancestor that has one.
    pub fn position(&self, pointer: &str) -> Pos {
        let mut p = pointer.to_owned();
        loop {
            if let Some(pos) = self.nodes.get(&p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    /// The position of the key whose value is at `pointer` (else of the value).
    pub fn key_position(&self, pointer: &str) -> Pos {
        self.keys
            .get(pointer)
            .copied()
            .unwrap_or_else(|| self.position(pointer))
    }
}

pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

enum Frame {
    Map {
        map: Map<String, Value>,
        key: Option<(String, Pos)>,
        /// `<<` values and the pointer they were loaded at.
        merges: Vec<(Value, String)>,
        pointer: String,
        anchor: usize,
    },
    Seq {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
    },
}

/// Resolve a plain scalar as YAML 1.1 does for the types pipelines use.
fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && let Ok(n) = text.parse::<i64>()
    {
        return Value::Number(n.into());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(n.into());
    }
    let looks_float = text.chars().any(|c| c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && text.contains(['.', 'e', 'E']);
    if looks_float
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

/// The budget every YAML document we read is held to (pipelines files by lint, `--fix`,
/// `migrate` and the operator's lookahead; RunnerPool manifests through
/// the same limits, in the binary): far above any real file (the corpus' largest has
/// a few thousand nodes and tens of kilobytes), far below what a bomb expands to. Refused
/// within tens of megabytes, before anything is expanded past it.
pub const MAX_INPUT_BYTES: usize = 8 << 20;
/// Nodes, counting each alias's expansion.
pub const MAX_NODES: usize = 200_000;
/// Bytes of scalars and keys, counting each alias's expansion.
pub const MAX_SCALAR_BYTES: usize = 16 << 20;

/// The nodes and scalar bytes of a value, counting itself.
fn footprint(value: &Value) -> (usize, usize) {
    match value {
        Value::Array(items) => items
            .iter()
            .map(footprint)
            .fold((1, 0), |(n, b), (n2, b2)| (n + n2, b + b2)),
        Value::Object(map) => map.iter().fold((1, 0), |(n, b), (k, v)| {
            let (n2, b2) = footprint(v);
            (n + n2, b + k.len() + b2)
        }),
        Value::String(s) => (1, s.len()),
        _ => (1, 8),
    }
}

struct Loader {
    stack: Vec<Frame>,
    /// Each anchor's value, where it was defined, and its footprint (nodes, bytes).
    anchors: HashMap<usize, (Value, String, (usize, usize))>,
    /// Nodes and scalar bytes so far, aliases expanded, against the budget.
    nodes: usize,
    bytes: usize,
    doc: Document,
    root: Option<Value>,
}

impl Loader {
    fn child_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map {
                key: Some((k, _)),
                pointer,
                ..
            }) => Some(format!("{pointer}/{}", escape(k))),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Seq { items, pointer, .. }) => Some(format!("{pointer}/{}", items.len())),
        }
    }

    /// Attach a finished node to its parent (or make it the root).
    fn attach(&mut self, value: Value, anchor: usize, pointer: &str) {
        if anchor > 0 {
            let size = footprint(&value);
            self.anchors
                .insert(anchor, (value.clone(), pointer.to_owned(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                map, key, merges, ..
            }) => {
                if let Some((k, _)) = key.take() {
                    if k == "<<" {
                        merges.push((value, pointer.to_owned()));
                    } else {
                        map.insert(k, value);
                    }
                }
            }
        }
    }

    /// Copy the positions of an anchored subtree to where an alias repeats it. The maps are
    /// sorted, so only the subtree is visited.
    fn copy_positions(&mut self, from: &str, to: &str) {
        let below = format!("{from}/");
        let subtree = |map: &BTreeMap<String, Pos>, with_root: bool| -> Vec<(String, Pos)> {
            let root = map
                .get(from)
                .filter(|_| with_root)
                .map(|pos| (to.to_owned(), *pos));
            root.into_iter()
                .chain(
                    map.range(below.clone()..)
                        .take_while(|(p, _)| p.starts_with(&below))
                        .map(|(p, pos)| (format!("{to}{}", &p[from.len()..]), *pos)),
                )
                .collect()
        };
        for (p, pos) in subtree(&self.doc.nodes, true) {
            self.doc.nodes.entry(p).or_insert(pos);
        }
        for (p, pos) in subtree(&self.doc.keys, false) {
            self.doc.keys.entry(p).or_insert(pos);
        }
    }
}

/// Load the first document of `text`.
pub fn load(text: &str) -> Result<Document, YamlError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(YamlError {
            line: 1,
            column: 1,
            message: format!(
                "the file is {} bytes, more than the {MAX_INPUT_BYTES} a pipelines file may have; refusing it",
                text.len()
            ),
        });
    }
    let mut loader = Loader {
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
        doc: Document::default(),
        root: None,
    };
    let over_budget = |pos: Pos, what: &str| YamlError {
        line: pos.line,
        column: pos.column,
        message: format!(
            "{what} expand the document past {MAX_NODES} nodes or {MAX_SCALAR_BYTES} bytes; refusing it (a YAML bomb?)"
        ),
    };
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| YamlError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        let pos = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        match &event {
            Event::Scalar(text, ..) => {
                loader.nodes += 1;
                loader.bytes += text.len();
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => loader.nodes += 1,
            _ => {}
        }
        if loader.nodes > MAX_NODES || loader.bytes > MAX_SCALAR_BYTES {
            return Err(over_budget(pos, "its nodes"));
        }
        // A scalar in key position of a mapping is a key.
        if let Some(Frame::Map {
            key: key @ None,
            pointer,
            ..
        }) = loader.stack.last_mut()
        {
            match &event {
                Event::Scalar(text, ..) => {
                    let k = text.to_string();
                    loader
                        .doc
                        .keys
                        .insert(format!("{pointer}/{}", escape(&k)), pos);
                    *key = Some((k, pos));
                    continue;
                }
                Event::Alias(id) => {
                    let k = loader.anchors.get(id).map(|(v, _, _)| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                    *key = Some((k.unwrap_or_default(), pos));
                    continue;
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    return Err(YamlError {
                        line: pos.line,
                        column: pos.column,
                        message: "complex mapping keys are not supported in pipelines files".into(),
                    });
                }
                // Comments and other presentation events carry no data.
                Event::MappingEnd => {}
                _ => continue,
            }
        }
        match event {
            Event::Scalar(text, style, anchor, _) => {
                let Some(pointer) = loader.child_pointer() else {
                    continue;
                };
                loader.doc.nodes.insert(pointer.clone(), pos);
                let value = if style == ScalarStyle::Plain {
                    plain(&text)
                } else {
                    Value::String(text.to_string())
                };
                loader.attach(value, anchor, &pointer);
            }
            Event::Alias(id) => {
                let Some(pointer) = loader.child_pointer() else {
                    continue;
                };
                let (nodes, bytes) = loader
                    .anchors
                    .get(&id)
                    .map(|(_, _, size)| *size)
                    .ok_or_else(|| YamlError {
                        line: pos.line,
                        column: pos.column,
                        message: "alias to an unknown anchor".into(),
                    })?;
                // Counted before the copy is made: a bomb is refused without expanding it.
                loader.nodes += nodes;
                loader.bytes += bytes;
                if loader.nodes > MAX_NODES || loader.bytes > MAX_SCALAR_BYTES {
                    return Err(over_budget(pos, "aliases"));
                }
                let (value, from, _) = loader.anchors[&id].clone();
                loader.copy_positions(&from, &pointer);
                loader.doc.nodes.insert(pointer.clone(), pos);
                loader.attach(value, 0, &pointer);
            }
            Event::SequenceStart(_, anchor, _) => {
                let Some(pointer) = loader.child_pointer() else {
                    continue;
                };
                loader.doc.nodes.insert(pointer.clone(), pos);
                loader.stack.push(Frame::Seq {
                    items: Vec::new(),
                    pointer,
                    anchor,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                let Some(pointer) = loader.child_pointer() else {
                    continue;
                };
                loader.doc.nodes.insert(pointer.clone(), pos);
                loader.stack.push(Frame::Map {
                    map: Map::new(),
                    key: None,
                    merges: Vec::new(),
                    pointer,
                    anchor,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    items,
                    pointer,
                    anchor,
                }) = loader.stack.pop()
                {
                    loader.attach(Value::Array(items), anchor, &pointer);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    mut map,
                    merges,
                    pointer,
                    anchor,
                    ..
                }) = loader.stack.pop()
                {
                    // Explicit keys win over merged ones, and earlier merges over later ones.
                    for (merged, merged_at) in merges {
                        let sources: Vec<(Value, String)> = match merged {
                            Value::Array(items) => items
                                .into_iter()
                                .enumerate()
                                .map(|(i, v)| (v, format!("{merged_at}/{i}")))
                                .collect(),
                            other => vec![(other, merged_at)],
                        };
                        for (source, source_at) in sources {
                            if let Value::Object(entries) = source {
                                for (k, v) in entries {
                                    if map.contains_key(&k) {
                                        continue;
                                    }
                                    let segment = escape(&k);
                                    loader.copy_positions(
                                        &format!("{source_at}/{segment}"),
                                        &format!("{pointer}/{segment}"),
                                    );
                                    if let Some(pos) = loader
                                        .doc
                                        .keys
                                        .get(&format!("{source_at}/{segment}"))
                                        .copied()
                                    {
                                        loader.doc.keys.insert(format!("{pointer}/{segment}"), pos);
                                    }
                                    map.insert(k, v);
                                }
                            }
                        }
                    }
                    loader.attach(Value::Object(map), anchor, &pointer);
                }
            }
            Event::DocumentEnd if loader.root.is_some() => break,
            _ => {}
        }
    }
    loader.doc.value = loader.root.unwrap_or(Value::Null);
    Ok(loader.doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_positions_anchors_and_merges() {
        let text = "definitions:\n  steps:\n    - step: &build\n        name: Build\n        size: 2x\n        script:\n          - make\npipelines:\n  default:\n    - step:\n        <<: *build\n        name: Override\n        max-time: 30\n";
        let doc = load(text).unwrap();
        let step = &doc.value["pipelines"]["default"][0]["step"];
        assert_eq!(step["name"], "Override");
        assert_eq!(step["size"], "2x");
        assert_eq!(step["max-time"], 30);
        assert_eq!(step["script"], json!(["make"]));
        assert_eq!(
            doc.position("/pipelines/default/0/step/max-time"),
            Pos {
                line: 13,
                column: 19
            }
        );
        assert_eq!(
            doc.key_position("/pipelines/default/0/step/max-time"),
            Pos {
                line: 13,
                column: 9
            }
        );
        assert_eq!(
            doc.position("/definitions/steps/0/step/size"),
            Pos {
                line: 5,
                column: 15
            }
        );
        // A merged key points into the anchor's definition.
        assert_eq!(
            doc.key_position("/pipelines/default/0/step/size"),
            doc.key_position("/definitions/steps/0/step/size")
        );
    }

    #[test]
    fn scalars_are_typed_like_yaml_1_1() {
        let doc =
            load("a: 1\nb: 1.5\nc: true\nd: 'true'\ne: ~\nf: 0x10\ng: 1x\nh: \"12\"\n").unwrap();
        assert_eq!(
            doc.value,
            json!({"a": 1, "b": 1.5, "c": true, "d": "true", "e": null, "f": 16, "g": "1x", "h": "12"})
        );
    }

    /// A 10 KB file: a 10,000-character string aliased 30 × 30 × 30 (270 MB expanded) is
    /// refused at the alias that would pass the byte budget, before it is copied.
    #[test]
    fn a_long_string_alias_bomb_is_refused_by_its_bytes() {
        let mut text = format!("a: &a \"{}\"\n", "x".repeat(10_000));
        for (name, of) in [("b", "a"), ("c", "b"), ("d", "c")] {
            let refs = vec![format!("*{of}"); 30].join(", ");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        assert!(text.len() < 11_000);
        let err = load(&text).unwrap_err();
        assert!(err.message.contains("YAML bomb"), "{err:?}");
        assert_eq!(
            err.line, 4,
            "refused in d, the level that passes the budget"
        );
    }

    #[test]
    fn many_plain_nodes_and_oversized_files_are_refused() {
        let wide = "- x\n".repeat(MAX_NODES + 1);
        assert!(load(&wide).unwrap_err().message.contains("YAML bomb"));
        let huge = format!("# {}\n", "x".repeat(MAX_INPUT_BYTES));
        let err = load(&huge).unwrap_err();
        assert!(err.message.contains("more than the"), "{err:?}");
        // Within the budget, a document of a few thousand nodes loads.
        let fine = "- x\n".repeat(5_000);
        assert_eq!(load(&fine).unwrap().value.as_array().unwrap().len(), 5_000);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = load("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.line >= 1, "{err}");
        let err = load("a:\n  - b\n c: d\n").unwrap_err();
        assert!(err.to_string().contains(':'), "{err}");
    }
}
