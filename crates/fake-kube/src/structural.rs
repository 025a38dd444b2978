//! A custom resource against its CRD's structural schema, as the API server treats it on every
//! write: defaults applied, unknown fields pruned (and reported, for `fieldValidation`),
//! `null` dropped where the schema is not nullable, types, enums, bounds, lengths, patterns
//! and required fields enforced, and CEL rules (`x-kubernetes-validations`, evaluated by
//! kube-rs' `kube-cel`), with the API server's messages. `format` is not enforced, as the API
//! server does not for most formats.

use std::cell::RefCell;

use serde_json::Value;

use crate::types::FieldValidation;

thread_local! {
    /// The request being served on this thread: its `fieldValidation` and the warnings it
    /// gathers. Store writes run without an await in between, so a request's writes and its
    /// settings share a thread.
    static REQUEST: RefCell<Option<Request>> = const { RefCell::new(None) };
}

/// What a client's request says of how its writes are made.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub field_validation: FieldValidation,
    /// `fieldManager`, else the client's name from its User-Agent, as the API server takes it.
    pub manager: String,
    /// `force`, for server-side apply.
    pub force: bool,
    warnings: Vec<String>,
}

impl Request {
    pub fn new(field_validation: FieldValidation, manager: String, force: bool) -> Self {
        Self {
            field_validation,
            manager,
            force,
            warnings: Vec::new(),
        }
    }
}

/// Run `write` as `request`; returns its result and its warnings.
pub fn with_request<T>(request: Request, write: impl FnOnce() -> T) -> (T, Vec<String>) {
    REQUEST.with(|r| *r.borrow_mut() = Some(request));
    let result = write();
    let warnings = REQUEST
        .with(|r| r.borrow_mut().take())
        .map(|r| r.warnings)
        .unwrap_or_default();
    (result, warnings)
}

/// The request being served; `None` for writes of the fake's own controllers.
pub fn request() -> Option<Request> {
    REQUEST.with(|r| r.borrow().clone())
}

/// The mode of the request being served; the fake's own controllers get the server's default.
pub fn field_validation() -> FieldValidation {
    request().map(|r| r.field_validation).unwrap_or_default()
}

pub fn warn(warnings: Vec<String>) {
    REQUEST.with(|r| {
        if let Some(request) = r.borrow_mut().as_mut() {
            request.warnings.extend(warnings);
        }
    });
}

#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Paths of the fields pruned, as `spec.minIdel`.
    pub unknown: Vec<String>,
    /// (path, message) of each violation.
    pub invalid: Vec<(String, String)>,
}

/// The CEL rules `object` breaks, as (path, message); transition rules see `old`.
pub fn cel(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    thread_local! {
        static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
    }
    let result = VALIDATOR.with(|v| v.validate(schema, object, old));
    match result {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| {
                let at = if e.field_path.is_empty() {
                    object
                } else {
                    e.field_path
                        .split('.')
                        .try_fold(object, |node, key| node.get(key))
                        .unwrap_or(&Value::Null)
                };
                (
                    e.field_path.clone(),
                    format!("Invalid value: \"{}\": {}", type_name(at), e.message),
                )
            })
            .collect(),
    }
}

/// Apply `schema` (a version's `openAPIV3Schema`) to a custom resource in place.
pub fn apply(schema: &Value, object: &mut Value) -> Report {
    let mut report = Report::default();
    if let Some(map) = object.as_object_mut() {
        // apiVersion, kind and metadata are the API server's own.
        let kept = ["apiVersion", "kind", "metadata"];
        let mut meta: Vec<(String, Value)> = Vec::new();
        for key in kept {
            if let Some(v) = map.remove(key) {
                meta.push((key.to_owned(), v));
            }
        }
        let mut rest = Value::Object(std::mem::take(map));
        object_fields(schema, &mut rest, "", &mut report);
        let Value::Object(rest) = rest else {
            unreachable!("an object stays an object")
        };
        *map = rest;
        for (key, value) in meta {
            map.insert(key, value);
        }
    }
    report
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A schema bound as the API server prints it: `100`, not `100.0`.
fn bound(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn quoted(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The fields of an object node: defaults, pruning, required, and each property.
fn object_fields(schema: &Value, value: &mut Value, path: &str, report: &mut Report) {
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    let properties = schema["properties"].as_object();
    let additional = schema["additionalProperties"]
        .as_object()
        .map(|_| &schema["additionalProperties"]);
    let Some(map) = value.as_object_mut() else {
        return;
    };
    if let Some(properties) = properties {
        for (key, property) in properties {
            if !map.contains_key(key)
                && let Some(default) = property.get("default")
            {
                map.insert(key.clone(), default.clone());
            }
        }
    }
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let field = join(path, &key);
        let child_schema = properties.and_then(|p| p.get(&key)).or(additional);
        match child_schema {
            Some(child) => {
                if map[&key].is_null() && child["nullable"] != true {
                    map.remove(&key);
                    continue;
                }
                node(child, map.get_mut(&key).expect("present"), &field, report);
            }
            None if preserve => {}
            None => {
                map.remove(&key);
                report.unknown.push(field);
            }
        }
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        if let Some(name) = required.as_str()
            && !map.contains_key(name)
        {
            report
                .invalid
                .push((join(path, name), "Required value".to_owned()));
        }
    }
}

fn node(schema: &Value, value: &mut Value, path: &str, report: &mut Report) {
    if value.is_null() {
        return;
    }
    let mut errors: Vec<String> = Vec::new();
    let mut invalid = |message: String| errors.push(message);
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let actual = type_name(value);
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            report.invalid.push((
                path.to_owned(),
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type integer,string: \"{actual}\""
                ),
            ));
            return;
        }
    } else if let Some(expected) = schema["type"].as_str() {
        let fits = expected == actual || (expected == "number" && actual == "integer");
        if !fits {
            report.invalid.push((
                path.to_owned(),
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
                ),
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(quoted).collect();
        invalid(format!(
            "Unsupported value: {}: supported values: {}",
            quoted(value),
            supported.join(", ")
        ));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                invalid(format!(
                    "Invalid value: {n}: {path} in body should be less than or equal to {}",
                    bound(max)
                ));
            }
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                invalid(format!(
                    "Invalid value: {n}: {path} in body should be greater than or equal to {}",
                    bound(min)
                ));
            }
        }
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && chars > max
            {
                invalid(format!("Too long: may not be more than {max} bytes"));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && chars < min
            {
                invalid(format!(
                    "Invalid value: {s:?}: {path} in body should be at least {min} chars long"
                ));
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && let Ok(re) = regex::Regex::new(pattern)
                && !re.is_match(s)
            {
                invalid(format!(
                    "Invalid value: {s:?}: {path} in body should match '{pattern}'"
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                invalid(format!(
                    "Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    node(item_schema, item, &format!("{path}[{i}]"), report);
                }
            }
        }
        Value::Object(_) => object_fields(schema, value, path, report),
        _ => {}
    }
    report
        .invalid
        .extend(errors.into_iter().map(|e| (path.to_owned(), e)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["workspace"], "properties": {
                "workspace": {"type": "string"},
                "mode": {"type": "string", "enum": ["managed", "static"], "default": "managed"},
                "labels": {"type": "array", "maxItems": 2, "items": {"type": "string", "pattern": "^[a-z0-9.]+$"}},
                "mtu": {"x-kubernetes-int-or-string": true},
                "scaling": {"type": "object", "properties": {
                    "min": {"type": "integer", "minimum": 0.0, "maximum": 100.0},
                    "scaleDownDelay": {"type": "string", "nullable": true},
                }},
                "podTemplate": {"type": "object", "properties": {
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                }},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }},
            "status": {"type": "object", "properties": {"desired": {"type": "integer"}}},
        }})
    }

    #[test]
    fn cel_rules_are_evaluated_with_the_api_server_s_message() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"},
                "poll": {"type": "string", "x-kubernetes-validations": [{"rule": "duration(self) >= duration('1s')", "message": "pollInterval is at least 1s"}]}}}}});
        let broken = json!({"spec": {"min": 5, "max": 2, "poll": "0s"}});
        assert_eq!(
            cel(&schema, &broken, None),
            [
                (
                    "spec".to_owned(),
                    "Invalid value: \"object\": min must not exceed max".to_owned()
                ),
                (
                    "spec.poll".to_owned(),
                    "Invalid value: \"string\": pollInterval is at least 1s".to_owned()
                ),
            ]
        );
        assert!(
            cel(
                &schema,
                &json!({"spec": {"min": 1, "max": 2, "poll": "15s"}}),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_named_and_defaults_applied() {
        let mut pool = json!({"apiVersion": "x/v1", "kind": "P", "metadata": {"name": "p"},
            "spec": {"workspace": "acme", "minIdel": 2, "scaling": {"scaleDownDelay": null},
                     "podTemplate": {"nodeSelector": {"pool": "ci"}}, "free": {"any": {"thing": 1}}},
            "extra": true});
        let report = apply(&schema(), &mut pool);
        assert_eq!(report.unknown, ["extra", "spec.minIdel"]);
        assert!(report.invalid.is_empty(), "{report:?}");
        assert_eq!(
            pool,
            json!({"apiVersion": "x/v1", "kind": "P", "metadata": {"name": "p"},
                "spec": {"workspace": "acme", "mode": "managed", "scaling": {"scaleDownDelay": null},
                         "podTemplate": {"nodeSelector": {"pool": "ci"}}, "free": {"any": {"thing": 1}}}})
        );
    }

    #[test]
    fn types_enums_bounds_patterns_and_required_fields_are_enforced_as_the_api_server_says() {
        let mut pool = json!({"spec": {"mode": "both", "labels": ["Bad", "b", "c"], "mtu": true,
            "scaling": {"min": 4_294_967_296_u64, "scaleDownDelay": 90}}});
        let report = apply(&schema(), &mut pool);
        let messages: Vec<String> = report
            .invalid
            .iter()
            .map(|(path, message)| format!("{path}: {message}"))
            .collect();
        for expected in [
            "spec.workspace: Required value",
            "spec.mode: Unsupported value: \"both\": supported values: \"managed\", \"static\"",
            "spec.labels: Too many: 3: must have at most 2 items",
            "spec.labels[0]: Invalid value: \"Bad\": spec.labels[0] in body should match '^[a-z0-9.]+$'",
            "spec.mtu: Invalid value: \"boolean\": spec.mtu in body must be of type integer,string: \"boolean\"",
            "spec.scaling.min: Invalid value: 4294967296: spec.scaling.min in body should be less than or equal to 100",
            "spec.scaling.scaleDownDelay: Invalid value: \"integer\": spec.scaling.scaleDownDelay in body must be of type string: \"integer\"",
        ] {
            assert!(
                messages.iter().any(|m| m == expected),
                "{expected}\nnot in {messages:#?}"
            );
        }
    }
}
