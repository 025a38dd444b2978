//! Patches as the API server applies them: JSON merge, JSON patch, strategic merge and
//! server-side apply, each judged like any other write.

use crate::types::{ApiError, PatchKind, ResourceType};
use serde_json::{Value, json};

use super::*;

/// A PATCH as the API receives it.
pub struct PatchRequest<'a> {
    pub rt: &'a ResourceType,
    pub version: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub kind: PatchKind,
    pub body: Value,
    /// Through the status subresource: only `status` changes.
    pub status_only: bool,
    pub field_manager: Option<&'a str>,
}

impl Store {
    /// A merge patch by a control-plane component (a controller, the garbage collector).
    pub fn merge(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let version = rt.versions.first().cloned().unwrap_or_default();
        self.patch(PatchRequest {
            rt,
            version: &version,
            namespace,
            name,
            kind: PatchKind::Merge,
            body,
            status_only: false,
            field_manager: None,
        })
    }

    pub fn patch(&self, request: PatchRequest<'_>) -> Result<Value, ApiError> {
        let PatchRequest {
            rt,
            version,
            namespace,
            name,
            kind,
            body: patch,
            status_only,
            field_manager,
        } = request;
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
        let update = Update::new(rt, version, namespace, name, status_only);
        let patch = &patch;
        let patched = self.update(update, |current| {
            let mut next = current.clone();
            match kind {
                PatchKind::Json => {
                    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
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
                    require_object(patch, "a merge patch must be a JSON object")?;
                    json_patch::merge(&mut next, patch);
                }
                PatchKind::Apply => {
                    require_object(patch, "an apply configuration must be an object")?;
                    next = crate::apply::apply(
                        Some(current),
                        patch,
                        &manager,
                        force,
                        subresource,
                        rt.shape(),
                        &now_rfc3339(),
                    )
                    .map_err(|message| ApiError::new(409, "Conflict", message))?;
                }
                PatchKind::Strategic => {
                    require_object(patch, "a strategic merge patch must be a JSON object")?;
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
                        patch,
                        crate::strategic::definition_of(&rt.kind),
                    );
                }
            }
            if kind != PatchKind::Apply && request.is_some() {
                crate::apply::record_update(
                    Some(current),
                    &mut next,
                    &manager,
                    subresource,
                    rt.shape(),
                    &now_rfc3339(),
                );
            }
            // A patch carrying a stale resourceVersion is a conflict too.
            if let Some(rv) = patch_rv(&next, current) {
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
            Ok(next)
        })?;
        if let Some(patched) = patched {
            return Ok(patched);
        }
        if kind != PatchKind::Apply || status_only {
            return Err(ApiError::not_found(rt, name));
        }
        let mut body = crate::apply::apply(
            None,
            patch,
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
        self.create(rt, version, namespace, body)
            .map_err(|_| ApiError::not_found(rt, name))
    }
}

/// A patch kind whose body must be a JSON object, refused as the API server refuses it.
fn require_object(patch: &Value, refusal: &str) -> Result<(), ApiError> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(ApiError::new(400, "BadRequest", refusal))
    }
}

/// The resourceVersion a patch asked for, when it differs from the current one.
fn patch_rv(next: &Value, current: &Value) -> Option<String> {
    let asked = next["metadata"]["resourceVersion"].as_str()?;
    let actual = current["metadata"]["resourceVersion"].as_str()?;
    (asked != actual).then(|| asked.to_owned())
}
