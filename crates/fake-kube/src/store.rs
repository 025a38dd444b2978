//! The object store: what etcd and the API server's registry do for a small cluster.
//! Objects are JSON values; every write bumps one global resourceVersion and is logged for
//! watches. Synchronous: the HTTP layer and the controllers call it under one lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::selector::{FieldSelector, LabelSelector};
use crate::types::{ApiError, FieldValidation, ResourceType, WatchEvent};
use crate::validate;

mod crds;
mod patch;

pub use patch::PatchRequest;

type ObjectKey = (String, String, String);

/// Every object of the cluster, its resourceVersion and the watch log.
pub struct Store {
    pub types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    rv: u64,
    log: VecDeque<Arc<WatchEvent>>,
    /// Watch events kept for resuming; older resourceVersions get 410 Gone.
    log_len: usize,
    pub events: broadcast::Sender<Arc<WatchEvent>>,
}

/// The time `seconds` from now, in RFC 3339 to the second.
fn in_seconds(seconds: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds.max(0));
    at.round(jiff::Unit::Second).unwrap_or(at).to_string()
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
    /// The ValidatingAdmissionPolicy bindings that deny, with their policies.
    fn admission_bindings(&self) -> Vec<crate::admission::Binding> {
        let group = crate::admission::GROUP;
        let (Some(policies), Some(bindings)) = (
            self.find_type(group, "validatingadmissionpolicies"),
            self.find_type(group, "validatingadmissionpolicybindings"),
        ) else {
            return Vec::new();
        };
        let everything = (LabelSelector::default(), FieldSelector::default());
        crate::admission::denying(
            self.list(bindings, None, &everything.0, &everything.1),
            |name| self.get(policies, "", name).ok(),
        )
    }

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
        crate::admission::admit(
            &self.admission_bindings(),
            rt,
            version,
            "CREATE",
            &body,
            None,
        )?;
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
            crate::admission::admit(
                &self.admission_bindings(),
                rt,
                &rt.versions[0],
                "UPDATE",
                &next,
                Some(&current),
            )?;
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
                // Only pods have a grace period; everything else waits for its finalizers.
                let grace = if rt.kind == "Pod" {
                    grace_seconds
                        .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
                        .unwrap_or(30)
                } else {
                    0
                };
                // As the API server writes it: when the grace period ends, the time by which
                // the kubelet must have stopped the pod.
                current["metadata"]["deletionTimestamp"] = json!(in_seconds(grace));
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
}
