//! The pool's finalizer and the one it holds on its credentials Secret: added and removed by
//! JSON patches that never drop another controller's finalizer.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use serde_json::json;

use crate::operator::pool::{self};

use super::*;

/// Add a finalizer by JSON patch: appended to the list, so that one another controller adds
/// at the same moment is kept; a list that does not exist yet is created only if the object
/// is unchanged since it was read. A failed test fails the reconcile, which retries. `label`,
/// if given, is set in the same patch, so that the two never disagree.
pub(super) async fn add_finalizer<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    finalizer: &str,
    label: Option<(&str, &str)>,
) -> Result<(), ReconcileError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut ops = match &meta.finalizers {
        Some(_) => vec![json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})],
        None => vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version}),
            json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}),
        ],
    };
    if let Some((key, value)) = label {
        ops.push(match &meta.labels {
            Some(_) => {
                let path = format!("/metadata/labels/{}", key.replace('/', "~1"));
                json!({"op": "add", "path": path, "value": value})
            }
            None => json!({"op": "add", "path": "/metadata/labels", "value": {key: value}}),
        });
    }
    patch_json(api, meta, ops).await
}

/// Remove a finalizer by JSON patch at its index, tested to still be there: other
/// controllers' finalizers are never dropped, and nothing else of the object need be current.
pub(super) async fn remove_finalizer_from<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    finalizer: &str,
) -> Result<(), ReconcileError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = meta
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == finalizer)
    else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let ops = vec![
        json!({"op": "test", "path": path, "value": finalizer}),
        json!({"op": "remove", "path": path}),
    ];
    patch_json(api, meta, ops).await
}

pub(super) async fn patch_json<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    ops: Vec<serde_json::Value>,
) -> Result<(), ReconcileError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(json!(ops)).expect("well-formed JSON patch");
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to hold or release.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a pool, as stored, still needs the credentials Secret `secret`: it names it and
/// is not finished with cleanup.
pub(super) fn uses_credentials(pool: &DynamicObject, secret: &str) -> bool {
    let spec = &pool.data["spec"];
    spec["mode"] != "static"
        && spec["credentials"]["secretRef"]["name"] == secret
        && (pool.metadata.deletion_timestamp.is_none()
            || pool.finalizers().iter().any(|f| f == pool::FINALIZER))
}

/// Release the credentials Secret `secret` of namespace `ns` unless a pool other than
/// `except` still uses it.
pub(super) async fn release_credentials(
    ctx: &Context,
    ns: &str,
    secret: &str,
    except: Option<&str>,
) -> Result<(), ReconcileError> {
    let pools: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &pools_resource());
    let still_used = pools
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|p| Some(p.name_any().as_str()) != except && uses_credentials(p, secret));
    if still_used {
        return Ok(());
    }
    let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(held) = secrets.get_metadata_opt(secret).await?
        && held
            .finalizers()
            .iter()
            .any(|f| f == pool::CREDENTIALS_FINALIZER)
    {
        remove_finalizer_from(&secrets, &held.metadata, pool::CREDENTIALS_FINALIZER).await?;
        tracing::info!(namespace = %ns, secret = %secret, "released the credentials Secret: no pool uses it");
    }
    Ok(())
}

/// Release every credentials Secret no pool uses any more: those of pools deleted or
/// changed while no operator ran, or whose finalizer was removed by hand.
pub async fn release_unused_credentials(ctx: &Context, namespace: Option<&str>) {
    let secrets: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let held = match secrets
        .list_metadata(&ListParams::default().labels(pool::LABEL_CREDENTIALS))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the credentials Secrets held by pools");
            return;
        }
    };
    for secret in held {
        let ns = secret.namespace().unwrap_or_default();
        if let Err(e) = release_credentials(ctx, &ns, &secret.name_any(), None).await {
            tracing::warn!(namespace = %ns, secret = %secret.name_any(), error = %e, "cannot release the credentials Secret");
        }
    }
}

/// The pool's runners are gone: forget its metrics, release its credentials, let it go.
pub(super) async fn finish_deletion(
    ctx: &Context,
    pool: &RunnerPool,
    api: &Api<DynamicObject>,
) -> Result<Requeue, ReconcileError> {
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    // The pool's finalizer first: while it stays, the pool may need its credentials again.
    remove_finalizer_from(api, &pool.metadata, pool::FINALIZER).await?;
    let held = pool
        .status
        .as_ref()
        .and_then(|s| s.credentials_secret.clone());
    if let Some(secret) = held {
        // No reconcile of this pool follows: a failure here is retried at once, and what
        // still fails is released when the operator next starts leading.
        let mut attempts = 0;
        while let Err(e) = release_credentials(ctx, &ns, &secret, Some(&name)).await {
            attempts += 1;
            if attempts == 3 {
                tracing::warn!(namespace = %ns, secret = %secret, error = %e, "cannot release the credentials Secret");
                break;
            }
        }
    }
    ctx.metrics.forget_pool(&ns, &name);
    ctx.hub.forget_pool(&(ns.clone(), name.clone()));
    ctx.demand.forget(&ns, &name);
    ctx.registrations.forget(&(ns.clone(), name.clone()));
    ctx.secret_references.set(&ns, &name, &[]);
    ctx.failures.forget(&(ns.clone(), name.clone()));
    ctx.queue_waits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forget(&format!("{ns}/{name}"));
    tracing::info!("pool deleted: its runners are gone from Bitbucket");
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;
    use k8s_openapi::api::core::v1::Secret;

    fn meta(finalizers: Option<&[&str]>, labels: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some("creds".into()),
            namespace: Some("ci".into()),
            resource_version: Some("7".into()),
            finalizers: finalizers.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
            labels: labels.then(Default::default),
            ..ObjectMeta::default()
        }
    }

    const SECRET: &str = r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}}"#;

    #[tokio::test]
    async fn a_finalizer_is_appended_and_a_new_list_is_made_only_on_the_object_read() {
        let (client, mut server) = fixture::client();
        let api: Api<Secret> = Api::namespaced(client, "ci");
        let (a, b) = (api.clone(), api.clone());
        let appended = tokio::spawn(async move {
            add_finalizer(
                &a,
                &meta(Some(&["other"]), true),
                "mine",
                Some(("x.dev/held", "yes")),
            )
            .await
        });
        let sent = fixture::expect(&mut server, 200, serde_json::from_str(SECRET).unwrap()).await;
        assert_eq!(sent.method, "PATCH");
        assert_eq!(sent.uri, "/api/v1/namespaces/ci/secrets/creds?");
        assert_eq!(sent.content_type, "application/json-patch+json");
        assert_eq!(
            sent.body,
            json!([
                {"op": "add", "path": "/metadata/finalizers/-", "value": "mine"},
                {"op": "add", "path": "/metadata/labels/x.dev~1held", "value": "yes"},
            ])
        );
        appended.await.unwrap().unwrap();
        let created =
            tokio::spawn(async move { add_finalizer(&b, &meta(None, false), "mine", None).await });
        let sent = fixture::expect(&mut server, 200, serde_json::from_str(SECRET).unwrap()).await;
        assert_eq!(
            sent.body,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/metadata/finalizers", "value": ["mine"]},
            ])
        );
        created.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_finalizer_is_removed_at_its_index_tested_first_and_a_gone_object_is_fine() {
        let (client, mut server) = fixture::client();
        let api: Api<Secret> = Api::namespaced(client, "ci");
        let removed = tokio::spawn(async move {
            remove_finalizer_from(&api, &meta(Some(&["a", "mine", "b"]), false), "mine").await
        });
        let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "not found", "reason": "NotFound", "code": 404});
        let sent = fixture::expect(&mut server, 404, gone).await;
        assert_eq!(
            sent.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": "mine"},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
        removed
            .await
            .unwrap()
            .expect("a gone object has nothing to release");
    }

    #[test]
    fn a_pool_uses_its_credentials_until_its_cleanup_is_done() {
        let pool = |spec: serde_json::Value, deleting: bool, finalizer: bool| {
            let mut object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "bbrunner.dev/v1alpha1", "kind": "RunnerPool",
                "metadata": {"name": "p"}, "spec": spec,
            }))
            .unwrap();
            if deleting {
                object.metadata.deletion_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
                );
            }
            if finalizer {
                object.metadata.finalizers = Some(vec![pool::FINALIZER.into()]);
            }
            object
        };
        let managed = json!({"credentials": {"secretRef": {"name": "creds"}}});
        assert!(uses_credentials(
            &pool(managed.clone(), false, true),
            "creds"
        ));
        assert!(!uses_credentials(
            &pool(managed.clone(), false, true),
            "other"
        ));
        assert!(uses_credentials(
            &pool(managed.clone(), true, true),
            "creds"
        ));
        assert!(!uses_credentials(&pool(managed, true, false), "creds"));
        let static_pool =
            json!({"mode": "static", "credentials": {"secretRef": {"name": "creds"}}});
        assert!(!uses_credentials(&pool(static_pool, false, true), "creds"));
    }
}
