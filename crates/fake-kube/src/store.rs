//! The object store: what etcd and the API server's registry do for a small cluster.
//! Objects are JSON values, kept per resource type, each type behind its own lock so that
//! writes to pods do not wait for reads of secrets. Every write bumps one global
//! resourceVersion and is logged for watches under a short lock taken last (`log.rs`), while
//! its type is locked: a list reports a version whose every event of its type it reflects.
//! No lock is held while another type's is taken, so the locks cannot deadlock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Value, json};

use crate::admission::Binding;
use crate::selector::{FieldSelector, LabelSelector};
use crate::types::{ApiError, FieldValidation, ResourceType, WatchEvent};
use crate::validate;

mod crds;
mod log;
mod patch;
#[cfg(test)]
mod tests;

pub use log::Resumed;
pub use patch::PatchRequest;

/// The objects of one type, by namespace and name.
type Table = BTreeMap<(String, String), Value>;

/// Every object of the cluster, its resourceVersion and the watch log.
pub struct Store {
    types: RwLock<Vec<ResourceType>>,
    tables: RwLock<HashMap<String, Arc<RwLock<Table>>>>,
    log: Mutex<log::WatchLog>,
}

// A panic while a lock was held leaves plain data behind; the next request may read it.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// The objects of `table` in `namespace` (all if `None`) that match both selectors.
fn select(
    table: &Table,
    namespace: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Vec<Value> {
    table
        .iter()
        .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
        .map(|(_, v)| v)
        .filter(|v| labels.matches(v) && fields.matches(v))
        .cloned()
        .collect()
}

fn object_key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_owned(), name.to_owned())
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
    pub fn new(types: Vec<ResourceType>, log_len: usize) -> Self {
        let tables = types.iter().map(|t| (t.key(), Arc::default())).collect();
        Self {
            types: RwLock::new(types),
            tables: RwLock::new(tables),
            log: Mutex::new(log::WatchLog::new(log_len)),
        }
    }

    /// The ValidatingAdmissionPolicy bindings that deny, with their policies. Read before
    /// the written type is locked: the policies' own types may be the one written.
    fn admission_bindings(&self) -> Vec<Binding> {
        let group = crate::admission::GROUP;
        let (Some(policies), Some(bindings)) = (
            self.find_type(group, "validatingadmissionpolicies"),
            self.find_type(group, "validatingadmissionpolicybindings"),
        ) else {
            return Vec::new();
        };
        let everything = (LabelSelector::default(), FieldSelector::default());
        crate::admission::denying(
            self.list(&bindings, None, &everything.0, &everything.1),
            |name| self.get(&policies, "", name).ok(),
        )
    }

    /// The table of a type, made on first use (a CRD's type before its first object).
    fn table(&self, rt: &ResourceType) -> Arc<RwLock<Table>> {
        let key = rt.key();
        if let Some(table) = read(&self.tables).get(&key) {
            return table.clone();
        }
        write(&self.tables).entry(key).or_default().clone()
    }

    /// A custom resource against its CRD's schema: pruned and defaulted in place; unknown
    /// fields refused, warned about or ignored as the request asks; violations refused.
    /// On an update, a violation the stored object already had passes (the API server's
    /// validation ratcheting, on by default since Kubernetes 1.30): a CRD tightened later
    /// must not block status writes to objects stored before.
    fn structural(
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
        lock(&self.log).rv()
    }

    /// The events after `after` and the live ones that follow; `Err(oldest)` when `after` is
    /// older than the log keeps.
    pub fn resume(&self, after: u64) -> Result<Resumed, u64> {
        lock(&self.log).resume(after)
    }

    /// Every event from now on (subscribe before listing: a list then reports the version
    /// from which the events take over).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<WatchEvent>> {
        lock(&self.log).subscribe()
    }

    pub fn find_type(&self, group: &str, plural: &str) -> Option<ResourceType> {
        read(&self.types)
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        read(&self.types)
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// The types served now (for discovery).
    pub fn types(&self) -> Vec<ResourceType> {
        read(&self.types).clone()
    }

    /// Give `object` the next resourceVersion and log its event. Called with the object's
    /// table locked for writing, so no list of its type sees the version without the write.
    fn stamp(&self, rt: &ResourceType, namespace: &str, kind: &'static str, object: &mut Value) {
        lock(&self.log).append(|rv| {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            WatchEvent {
                rv,
                type_key: rt.key(),
                namespace: namespace.to_owned(),
                kind,
                object: object.clone(),
            }
        });
    }

    fn with_type_meta(rt: &ResourceType, version: &str, mut object: Value) -> Value {
        object["apiVersion"] = json!(rt.api_version(version));
        object["kind"] = json!(rt.kind);
        object
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        read(&self.table(rt))
            .get(&object_key(namespace, name))
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
        select(&read(&self.table(rt)), namespace, labels, fields)
    }

    /// A list and the resourceVersion it is current at, as a list response reports it: read
    /// while the type is locked, so no write of the type lies between them.
    pub fn list_at(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let table = self.table(rt);
        let table = read(&table);
        (
            select(&table, namespace, labels, fields),
            self.resource_version(),
        )
    }

    /// Every object of every type (for the garbage collector), type by type.
    pub fn all(&self) -> Vec<(ResourceType, Value)> {
        self.types()
            .into_iter()
            .flat_map(|t| {
                let objects: Vec<Value> = read(&self.table(&t)).values().cloned().collect();
                objects.into_iter().map(move |v| (t.clone(), v))
            })
            .collect()
    }

    pub fn create(
        &self,
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
        let namespace = if rt.namespaced { namespace } else { "" };
        let key = object_key(namespace, &name);
        let already_exists = || ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", rt.plural),
            details: Some(json!({"name": name, "kind": rt.plural})),
        };
        // Checked before the work below too, as a client creating what exists is common.
        if read(&self.table(rt)).contains_key(&key) {
            return Err(already_exists());
        }
        body["metadata"]["name"] = json!(name);
        if rt.namespaced {
            body["metadata"]["namespace"] = json!(namespace);
        } else if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        validate::object(rt, &mut body).map_err(|causes| ApiError::invalid(rt, &name, causes))?;
        Self::structural(rt, &name, &mut body, None)?;
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
        let meta = body["metadata"].as_object_mut().expect("set above");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
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
        let mut body = Self::with_type_meta(rt, version, body);
        let table = self.table(rt);
        let mut table = write(&table);
        // Another request may have created it since the check above.
        if table.contains_key(&key) {
            return Err(already_exists());
        }
        self.stamp(rt, namespace, "ADDED", &mut body);
        table.insert(key, body.clone());
        Ok(body)
    }

    /// Replace an object (or its status), with optimistic concurrency on resourceVersion.
    pub fn replace(
        &self,
        rt: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        body: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let update = Update::new(rt, version, namespace, name, status_only);
        self.update(update, |current| {
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
                    Some(current),
                    &mut merged,
                    &request.manager,
                    status_only.then_some("status"),
                    rt.shape(),
                    &now_rfc3339(),
                );
                body["metadata"]["managedFields"] = merged["metadata"]["managedFields"].clone();
            }
            Ok(body)
        })?
        .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Read, change and write one object with its type locked, so that no write comes in
    /// between: `change` makes the desired object from the current one. `None` when there is
    /// no such object.
    fn update(
        &self,
        update: Update<'_>,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Option<Value>, ApiError> {
        // Read before the lock: the policies' own types may be the one written.
        let bindings = self.bindings_for(update.status_only);
        let table = self.table(update.rt);
        let mut table = write(&table);
        let Some(current) = table
            .get(&object_key(update.namespace, update.name))
            .cloned()
        else {
            return Ok(None);
        };
        let desired = change(&current)?;
        self.commit(&mut table, update, &bindings, current, desired)
            .map(Some)
    }

    /// The admission bindings an update is judged by (a status write is not).
    fn bindings_for(&self, status_only: bool) -> Vec<Binding> {
        if status_only {
            Vec::new()
        } else {
            self.admission_bindings()
        }
    }

    /// Write `desired` over `current` in `table` (locked by the caller), keeping what the API
    /// server owns.
    fn commit(
        &self,
        table: &mut Table,
        update: Update<'_>,
        bindings: &[Binding],
        current: Value,
        mut desired: Value,
    ) -> Result<Value, ApiError> {
        let Update {
            rt,
            version,
            namespace,
            name,
            status_only,
        } = update;
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
        Self::structural(rt, name, &mut next, Some(&current))?;
        if !status_only {
            validate::object(rt, &mut next)
                .map_err(|causes| ApiError::invalid(rt, name, causes))?;
            crate::admission::admit(
                bindings,
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
        let mut next = Self::with_type_meta(rt, version, next);
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
        self.stamp(rt, namespace, "MODIFIED", &mut next);
        let key = object_key(namespace, name);
        table.insert(key.clone(), next.clone());
        self.finish_if_unblocked(table, rt, namespace, name);
        Ok(table.get(&key).cloned().unwrap_or(next))
    }

    /// Delete: with finalizers the object stays, marked; otherwise it goes at once (pods are
    /// first marked, and the kubelet removes them once their containers stop).
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<Value, ApiError> {
        let table = self.table(rt);
        let mut table = write(&table);
        let key = object_key(namespace, name);
        let mut current = table
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
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
                self.stamp(rt, namespace, "MODIFIED", &mut current);
                table.insert(key, current.clone());
            }
            return Ok(current);
        }
        Ok(self
            .remove_from(&mut table, rt, namespace, name)
            .unwrap_or(current))
    }

    /// Remove an object for good (finalizers done, or forced).
    pub fn remove(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let table = self.table(rt);
        let mut table = write(&table);
        self.remove_from(&mut table, rt, namespace, name)
    }

    fn remove_from(
        &self,
        table: &mut Table,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let mut removed = table.remove(&object_key(namespace, name))?;
        self.stamp(rt, namespace, "DELETED", &mut removed);
        Some(removed)
    }

    /// An object marked for deletion whose last finalizer is gone is removed.
    fn finish_if_unblocked(
        &self,
        table: &mut Table,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
    ) {
        let Some(current) = table.get(&object_key(namespace, name)) else {
            return;
        };
        let marked = !current["metadata"]["deletionTimestamp"].is_null();
        let blocked = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let waits_for_kubelet = rt.kind == "Pod" || rt.kind == "Namespace";
        if marked && !blocked && !waits_for_kubelet {
            self.remove_from(table, rt, namespace, name);
        }
    }
}

/// The object an update writes.
#[derive(Clone, Copy)]
struct Update<'a> {
    rt: &'a ResourceType,
    version: &'a str,
    namespace: &'a str,
    name: &'a str,
    status_only: bool,
}

impl<'a> Update<'a> {
    fn new(
        rt: &'a ResourceType,
        version: &'a str,
        namespace: &'a str,
        name: &'a str,
        status_only: bool,
    ) -> Self {
        Self {
            rt,
            version,
            namespace,
            name,
            status_only,
        }
    }
}
