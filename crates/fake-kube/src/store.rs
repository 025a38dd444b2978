//! The object store: what etcd and the API server's registry do for a small cluster.
//! Objects are JSON values; every write bumps one global resourceVersion and is logged for
//! watches. Synchronous: the HTTP layer and the controllers call it under one lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::selector::{FieldSelector, LabelSelector};
use crate::validate;

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

type ObjectKey = (String, String, String);

pub struct Store {
    pub types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    rv: u64,
    log: VecDeque<Arc<WatchEvent>>,
    /// Watch events kept for resuming; older resourceVersions get 410 Gone.
    log_len: usize,
    pub events: broadcast::Sender<Arc<WatchEvent>>,
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// The spec-like part of an object, whose changes bump `metadata.generation`.
fn generation_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

impl Store {
    pub fn new(types: Vec<ResourceType>, log_len: usize) -> Self {
        let (events, _) = broadcast::channel(8192);
        Self {
            types,
            objects: BTreeMap::new(),
            rv: 1,
            log: VecDeque::new(),
            log_len: log_len.max(1),
            events,
        }
    }

    /// A custom resource against its CRD's schema: pruned and defaulted in place; unknown
    /// fields refused, warned about or ignored as the request asks; violations refused.
    /// On an update, a violation the stored object already had passes (the API server's
    /// validation ratcheting, on by default since Kubernetes 1.30): a CRD tightened later
    /// must not block status writes to objects stored before.
    fn structural(
        &self,
        rt: &ResourceType,
        name: &str,
        object: &mut Value,
        current: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(schema) = &rt.schema else {
            return Ok(());
        };
        let mut report = crate::structural::apply(schema, object);
        if report.invalid.is_empty() {
            // CEL rules run on an object that is otherwise valid, as the API server runs them.
            report.invalid = crate::structural::cel(schema, object, current);
        }
        if let Some(current) = current {
            let mut before = current.clone();
            let mut violations = crate::structural::apply(schema, &mut before).invalid;
            violations.extend(crate::structural::cel(schema, &before, None));
            report.invalid.retain(|v| !violations.contains(v));
        }
        if !report.invalid.is_empty() {
            return Err(ApiError::invalid(rt, name, report.invalid));
        }
        if report.unknown.is_empty() {
            return Ok(());
        }
        let named: Vec<String> = report
            .unknown
            .iter()
            .map(|field| format!("unknown field \"{field}\""))
            .collect();
        match crate::structural::field_validation() {
            FieldValidation::Strict => Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    rt.kind,
                    rt.api_version(&rt.versions[0]),
                    rt.kind,
                    named.join(", ")
                ),
            )),
            FieldValidation::Warn => {
                crate::structural::warn(named);
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may resume from.
    pub fn oldest_resumable(&self) -> u64 {
        self.log.front().map(|e| e.rv - 1).unwrap_or(self.rv)
    }

    pub fn find_type(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
    }

    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.types
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))
    }

    fn record(&mut self, rt: &ResourceType, namespace: &str, kind: &'static str, object: Value) {
        let event = Arc::new(WatchEvent {
            rv: self.rv,
            type_key: rt.key(),
            namespace: namespace.to_owned(),
            kind,
            object,
        });
        self.log.push_back(event.clone());
        while self.log.len() > self.log_len {
            self.log.pop_front();
        }
        let _ = self.events.send(event);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn with_type_meta(rt: &ResourceType, version: &str, mut object: Value) -> Value {
        object["apiVersion"] = json!(rt.api_version(version));
        object["kind"] = json!(rt.kind);
        object
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(rt.key(), namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type, optionally in one namespace, sorted by namespace and name.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        let key = rt.key();
        self.objects
            .range((key.clone(), String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == key)
            .filter(|((_, ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v)
            .filter(|v| labels.matches(v) && fields.matches(v))
            .cloned()
            .collect()
    }

    /// Every object of every type (for the garbage collector).
    pub fn all(&self) -> impl Iterator<Item = (&ResourceType, &Value)> {
        self.objects
            .iter()
            .filter_map(|((k, _, _), v)| self.types.iter().find(|t| t.key() == *k).map(|t| (t, v)))
    }

    pub fn backlog(&self, after: u64) -> Vec<Arc<WatchEvent>> {
        self.log.iter().filter(|e| e.rv > after).cloned().collect()
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        version: &str,
        namespace: &str,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the request body is not a JSON object",
            ));
        }
        let meta = body["metadata"].as_object().cloned().unwrap_or_default();
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = std::iter::repeat_with(|| {
                        let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
                        alphabet[fastrand::usize(..alphabet.len())] as char
                    })
                    .take(5)
                    .collect();
                    name = format!("{prefix}{suffix}");
                }
                _ => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        vec![(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        if rt.namespaced {
            if let Some(ns) = meta.get("namespace").and_then(Value::as_str)
                && !ns.is_empty()
                && ns != namespace
            {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!(
                        "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({namespace})"
                    ),
                ));
            }
            let ns_type = self
                .find_type("", "namespaces")
                .cloned()
                .expect("namespaces are built in");
            match self.get(&ns_type, "", namespace) {
                Err(_) => {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("namespaces \"{namespace}\" not found"),
                    ));
                }
                Ok(ns) if !ns["metadata"]["deletionTimestamp"].is_null() => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                            rt.plural
                        ),
                    ));
                }
                Ok(_) => {}
            }
        }
        let key = (
            rt.key(),
            if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            return Err(ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", rt.plural),
                details: Some(json!({"name": name, "kind": rt.plural})),
            });
        }
        body["metadata"]["name"] = json!(name);
        if rt.namespaced {
            body["metadata"]["namespace"] = json!(namespace);
        } else if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        validate::object(rt, &mut body).map_err(|causes| ApiError::invalid(rt, &name, causes))?;
        self.structural(rt, &name, &mut body, None)?;
        crate::admission::admit(self, rt, version, "CREATE", &body, None)?;
        // A client's create is an update by its manager (an apply recorded its own already).
        if let Some(request) = crate::structural::request()
            && body["metadata"]["managedFields"].is_null()
        {
            crate::apply::record_update(
                None,
                &mut body,
                &request.manager,
                None,
                rt.shape(),
                &now_rfc3339(),
            );
        }
        let rv = self.next_rv();
        let meta = body["metadata"].as_object_mut().expect("set above");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if rt.has_generation() {
            meta.insert("generation".into(), json!(1));
        }
        meta.remove("deletionTimestamp");
        // Status is written only through /status (a kubelet registers its Node with one).
        if rt.status_subresource
            && rt.kind != "Node"
            && let Some(map) = body.as_object_mut()
        {
            map.remove("status");
        }
        validate::on_create(rt, &mut body);
        let body = Self::with_type_meta(rt, version, body);
        self.objects.insert(key.clone(), body.clone());
        self.record(rt, &key.1, "ADDED", body.clone());
        Ok(body)
    }

    /// Replace an object (or its status), with optimistic concurrency on resourceVersion.
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        body: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let current = self.get(rt, namespace, name)?;
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv
                != current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
        {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    rt.plural
                ),
                details: Some(json!({"name": name, "kind": rt.plural})),
            });
        }
        let mut body = body;
        if let Some(request) = crate::structural::request() {
            // An update by a client: what it changed is its manager's.
            let mut merged = body.clone();
            merged["metadata"]["managedFields"] = current["metadata"]["managedFields"].clone();
            crate::apply::record_update(
                Some(&current),
                &mut merged,
                &request.manager,
                status_only.then_some("status"),
                rt.shape(),
                &now_rfc3339(),
            );
            body["metadata"]["managedFields"] = merged["metadata"]["managedFields"].clone();
        }
        self.commit(rt, version, namespace, name, current, body, status_only)
    }

    /// Write `desired` over `current`, keeping what the API server owns.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        rt: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        current: Value,
        mut desired: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        if !desired.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the request body is not a JSON object",
            ));
        }
        let mut next = if status_only {
            let mut next = current.clone();
            next["status"] = desired["status"].take();
            next
        } else {
            if rt.status_subresource {
                desired["status"] = current["status"].clone();
            }
            // Identity and server-owned metadata cannot change.
            for field in [
                "uid",
                "creationTimestamp",
                "name",
                "namespace",
                "deletionTimestamp",
                "generation",
            ] {
                desired["metadata"][field] = current["metadata"][field].clone();
            }
            desired
        };
        if let Some(meta) = next["metadata"].as_object_mut() {
            meta.retain(|_, v| !v.is_null());
        }
        if !current["metadata"]["deletionTimestamp"].is_null() {
            let finalizers = |o: &Value| -> Vec<String> {
                o["metadata"]["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            };
            let before = finalizers(&current);
            let added: Vec<String> = finalizers(&next)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let quoted: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(ApiError::invalid(
                    rt,
                    name,
                    vec![(
                        "metadata.finalizers".into(),
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            quoted.join(", ")
                        ),
                    )],
                ));
            }
        }
        self.structural(rt, name, &mut next, Some(&current))?;
        if !status_only {
            validate::object(rt, &mut next)
                .map_err(|causes| ApiError::invalid(rt, name, causes))?;
            crate::admission::admit(self, rt, &rt.versions[0], "UPDATE", &next, Some(&current))?;
            if rt.has_generation() && generation_part(&next) != generation_part(&current) {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                next["metadata"]["generation"] = json!(generation);
            }
        }
        let next = Self::with_type_meta(rt, version, next);
        let unchanged = {
            let mut a = next.clone();
            let mut b = current.clone();
            a["metadata"]["resourceVersion"] = Value::Null;
            b["metadata"]["resourceVersion"] = Value::Null;
            a == b
        };
        if unchanged {
            return Ok(current);
        }
        let rv = self.next_rv();
        let mut next = next;
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (rt.key(), namespace.to_owned(), name.to_owned());
        self.objects.insert(key, next.clone());
        self.record(rt, namespace, "MODIFIED", next.clone());
        self.finish_if_unblocked(rt, namespace, name);
        Ok(self.get(rt, namespace, name).unwrap_or(next))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        patch: Value,
        status_only: bool,
        field_manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        let request = crate::structural::request();
        let manager = field_manager
            .map(str::to_owned)
            .or_else(|| request.as_ref().map(|r| r.manager.clone()))
            .unwrap_or_else(|| "unknown".to_owned());
        let force = request.as_ref().is_some_and(|r| r.force);
        let subresource = status_only.then_some("status");
        if kind == PatchKind::Apply
            && let Some(schema) = &rt.schema
        {
            // An applied configuration must fit the schema: server-side apply refuses a field
            // the schema does not declare, whatever fieldValidation asks.
            let mut config = patch.clone();
            if let Some(field) = crate::structural::apply(schema, &mut config)
                .unknown
                .first()
            {
                let version = rt.versions.first().map(String::as_str).unwrap_or("");
                return Err(ApiError::new(
                    500,
                    "",
                    format!(
                        "failed to create typed patch object ({namespace}/{name}; {}/{version}, Kind={}): .{field}: field not declared in schema",
                        rt.group, rt.kind
                    ),
                ));
            }
        }
        let current = match self.get(rt, namespace, name) {
            Ok(c) => c,
            Err(e) if kind == PatchKind::Apply && !status_only => {
                let mut body = crate::apply::apply(
                    None,
                    &patch,
                    &manager,
                    force,
                    None,
                    rt.shape(),
                    &now_rfc3339(),
                )
                .map_err(|message| ApiError::new(409, "Conflict", message))?;
                body["apiVersion"] = patch["apiVersion"].clone();
                body["kind"] = patch["kind"].clone();
                body["metadata"]["name"] = json!(name);
                return self.create(rt, version, namespace, body).map_err(|_| e);
            }
            Err(e) => return Err(e),
        };
        let mut next = current.clone();
        match kind {
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                    ApiError::new(400, "BadRequest", format!("invalid JSON patch: {e}"))
                })?;
                json_patch::patch(&mut next, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?;
            }
            PatchKind::Merge => {
                if !patch.is_object() {
                    return Err(ApiError::new(
                        400,
                        "BadRequest",
                        "a merge patch must be a JSON object",
                    ));
                }
                json_patch::merge(&mut next, &patch);
            }
            PatchKind::Apply => {
                if !patch.is_object() {
                    return Err(ApiError::new(
                        400,
                        "BadRequest",
                        "an apply configuration must be an object",
                    ));
                }
                next = crate::apply::apply(
                    Some(&current),
                    &patch,
                    &manager,
                    force,
                    subresource,
                    rt.shape(),
                    &now_rfc3339(),
                )
                .map_err(|message| ApiError::new(409, "Conflict", message))?;
            }
            PatchKind::Strategic => {
                if !patch.is_object() {
                    return Err(ApiError::new(
                        400,
                        "BadRequest",
                        "a strategic merge patch must be a JSON object",
                    ));
                }
                // Custom resources have no Go types to read patch strategies from.
                if rt.schema.is_some() {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "strategic merge patch is not supported for {}: use a merge patch, a JSON patch or server-side apply",
                            rt.key()
                        ),
                    ));
                }
                // A built-in kind not in the vendored metadata merges its lists atomically.
                crate::strategic::apply(
                    &mut next,
                    &patch,
                    crate::strategic::definition_of(&rt.kind),
                );
            }
        }
        if kind != PatchKind::Apply && request.is_some() {
            crate::apply::record_update(
                Some(&current),
                &mut next,
                &manager,
                subresource,
                rt.shape(),
                &now_rfc3339(),
            );
        }
        // A patch carrying a stale resourceVersion is a conflict too.
        if let Some(rv) = patch_rv(&next, &current) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified (resourceVersion {rv})",
                    rt.plural
                ),
            ));
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        self.commit(rt, version, namespace, name, current, next, status_only)
    }

    /// Delete: with finalizers the object stays, marked; otherwise it goes at once (pods are
    /// first marked, and the kubelet removes them once their containers stop).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<Value, ApiError> {
        let mut current = self.get(rt, namespace, name)?;
        let has_finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        // As the API server decides: a pod not yet on a node, or whose containers have ended,
        // goes at once; one on a node waits for its kubelet.
        let terminal = matches!(
            current["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        let graceful_pod = rt.kind == "Pod"
            && grace_seconds != Some(0)
            && !current["spec"]["nodeName"].is_null()
            && !terminal;
        if has_finalizers || graceful_pod || rt.kind == "Namespace" {
            if current["metadata"]["deletionTimestamp"].is_null() {
                current["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                // Only pods have a grace period; everything else waits for its finalizers.
                let grace = if rt.kind == "Pod" {
                    grace_seconds
                        .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
                        .unwrap_or(30)
                } else {
                    0
                };
                current["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                if rt.kind == "Namespace" {
                    current["status"]["phase"] = json!("Terminating");
                }
                let rv = self.next_rv();
                current["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.objects.insert(
                    (rt.key(), namespace.to_owned(), name.to_owned()),
                    current.clone(),
                );
                self.record(rt, namespace, "MODIFIED", current.clone());
            }
            return Ok(current);
        }
        Ok(self.remove(rt, namespace, name).unwrap_or(current))
    }

    /// Remove an object for good (finalizers done, or forced).
    pub fn remove(&mut self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let mut removed =
            self.objects
                .remove(&(rt.key(), namespace.to_owned(), name.to_owned()))?;
        let rv = self.next_rv();
        removed["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(rt, namespace, "DELETED", removed.clone());
        Some(removed)
    }

    /// An object marked for deletion whose last finalizer is gone is removed.
    fn finish_if_unblocked(&mut self, rt: &ResourceType, namespace: &str, name: &str) {
        let Ok(current) = self.get(rt, namespace, name) else {
            return;
        };
        let marked = !current["metadata"]["deletionTimestamp"].is_null();
        let blocked = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let waits_for_kubelet = rt.kind == "Pod" || rt.kind == "Namespace";
        if marked && !blocked && !waits_for_kubelet {
            self.remove(rt, namespace, name);
        }
    }

    /// Register a custom resource type from a CRD object.
    pub fn register_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let versions: Vec<String> = spec["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["served"].as_bool().unwrap_or(true))
                    .filter_map(|v| v["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let first = &spec["versions"][0];
        let columns = first["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or("").to_owned(),
                        kind: c["type"].as_str().unwrap_or("string").to_owned(),
                        json_path: c["jsonPath"].as_str().unwrap_or("").to_owned(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rt = ResourceType {
            group: spec["group"].as_str().unwrap_or("").to_owned(),
            versions,
            kind: spec["names"]["kind"].as_str().unwrap_or("").to_owned(),
            plural: spec["names"]["plural"].as_str().unwrap_or("").to_owned(),
            singular: spec["names"]["singular"].as_str().unwrap_or("").to_owned(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            status_subresource: first["subresources"]["status"].is_object(),
            short_names: spec["names"]["shortNames"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            categories: spec["names"]["categories"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            printer_columns: columns,
            schema: first["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| first["schema"]["openAPIV3Schema"].clone()),
        };
        self.types
            .retain(|t| !(t.group == rt.group && t.plural == rt.plural));
        self.types.push(rt);
    }

    pub fn unregister_crd(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or("").to_owned();
        let plural = crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let key = format!("{group}/{plural}");
        let doomed: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|(k, _, _)| *k == key)
            .cloned()
            .collect();
        if let Some(rt) = self.find_type(&group, &plural).cloned() {
            for (_, ns, name) in doomed {
                self.remove(&rt, &ns, &name);
            }
        }
        self.types
            .retain(|t| !(t.group == group && t.plural == plural));
    }
}

/// The resourceVersion a patch asked for, when it differs from the current one.
fn patch_rv(next: &Value, current: &Value) -> Option<String> {
    let asked = next["metadata"]["resourceVersion"].as_str()?;
    let actual = current["metadata"]["resourceVersion"].as_str()?;
    (asked != actual).then(|| asked.to_owned())
}
