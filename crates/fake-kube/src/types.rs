//! What the layers of fake-kube share: resource types, API errors as the server writes them,
//! watch events and patch kinds. A leaf: it imports none of the layers that use it.

use serde_json::{Value, json};

/// A kind of object the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    /// A CRD's categories: `kubectl get CATEGORY` lists every kind in it.
    pub categories: Vec<String>,
    /// Printer columns of a CRD, for `kubectl get`.
    pub printer_columns: Vec<PrinterColumn>,
    /// A CRD's structural schema (`openAPIV3Schema`), enforced on every write.
    pub schema: Option<Value>,
}

/// One of a CRD's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    pub kind: String,
    pub json_path: String,
    /// Above 0: shown by `kubectl get -o wide` only.
    pub priority: i64,
}

/// What the API server does with fields a schema does not declare (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Refuse the request.
    Strict,
    /// Drop them and say so in a `Warning` header (the server's default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::new(
                400,
                "BadRequest",
                format!("fieldValidation must be Ignore, Warn or Strict, got {other:?}"),
            )),
        }
    }
}

impl ResourceType {
    pub fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status: bool,
    ) -> Self {
        Self {
            group: group.to_owned(),
            versions: vec![version.to_owned()],
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            status_subresource: status,
            short_names: Vec::new(),
            categories: Vec::new(),
            printer_columns: Vec::new(),
            schema: None,
        }
    }

    /// Whether objects of this kind carry `metadata.generation`: custom resources (every CRD
    /// version has a schema) and the built-in kinds whose spec a controller acts on; not
    /// Secrets, ConfigMaps, Namespaces, Events or Leases.
    pub fn has_generation(&self) -> bool {
        self.schema.is_some()
            || matches!(
                self.kind.as_str(),
                "Deployment" | "Job" | "CustomResourceDefinition"
            )
    }

    /// What server-side apply knows of this kind's fields.
    pub fn shape(&self) -> crate::apply::Shape<'_> {
        match &self.schema {
            Some(schema) => crate::apply::Shape::Crd(schema),
            None => crate::apply::Shape::Builtin(crate::strategic::definition_of(&self.kind)),
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
}

/// An API error, rendered as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let what = if rt.group.is_empty() {
            rt.plural.clone()
        } else {
            format!("{}.{}", rt.plural, rt.group)
        };
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{what} \"{name}\" not found"),
            details: Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        }
    }

    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<(String, String)>) -> Self {
        let message = format!(
            "{} \"{name}\" is invalid: {}",
            rt.kind,
            causes
                .iter()
                .map(|(field, msg)| format!("{field}: {msg}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Self {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(json!({
                "name": name,
                "group": rt.group,
                "kind": rt.kind,
                "causes": causes.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "field": f, "message": m})).collect::<Vec<_>>(),
            })),
        }
    }

    pub fn status_body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        // The API server leaves the reason out where it has none.
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub rv: u64,
    pub type_key: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

/// How a patch body is to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    /// Strategic merge patch (see `strategic`).
    Strategic,
    /// Server-side apply (see `apply`).
    Apply,
}
