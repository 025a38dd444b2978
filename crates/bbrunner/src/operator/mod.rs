//! The operator: a kube-runtime controller over RunnerPools, their pods and Secrets, with
//! leader election on a Lease, Prometheus metrics and graceful shutdown.

pub mod clock;
pub mod crd;
mod demand;
mod hub;
mod metrics;
mod pod_view;
mod pool;
pub mod reconcile;
mod serve;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use bbrunner_core::ownership::ClusterId;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerError;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

pub use reconcile::Settings;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub bitbucket_url: String,
    pub bitbucket_auth_url: String,
    pub metrics_addr: Option<SocketAddr>,
    pub leader_election: bool,
    /// Watch these namespaces; none: all.
    pub namespace: Vec<String>,
    /// Where the leader Lease lives.
    pub lease_namespace: String,
    pub settings: Settings,
    /// Bitbucket request budget per identity and hour.
    pub budget: bitbucket::RequestBudget,
    /// This cluster's name in runner names; `None`: from the kube-system namespace's UID.
    pub cluster_id: Option<ClusterId>,
    /// The clock of the time-based rules: the wall clock but in simulations.
    pub clock: clock::Clock,
    /// Where to receive Bitbucket's webhooks, and the secret they are signed with.
    pub webhooks: Option<(SocketAddr, SecretString)>,
}

/// Whether a Kubernetes API failure may pass by itself: a server error, throttling, or no
/// answer at all. Refusals (403, 404, ...) will not, and retrying them only hides them.
fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs a call the operator cannot start without, retrying transient failures for about a
/// minute: an API server restarting while the operator starts is no reason to crash-loop.
async fn at_startup<T, E, Fut>(
    what: &str,
    transient: impl Fn(&E) -> bool,
    call: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    use backon::{ExponentialBuilder, Retryable as _};
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(200))
            .with_max_delay(std::time::Duration::from_secs(10))
            .with_max_times(10),
    )
    .when(transient)
    .notify(|error, delay| tracing::warn!(%error, ?delay, "{what} failed; retrying"))
    .await
}

/// The cluster's identity: as given, or the first 8 hex digits of kube-system's UID.
async fn cluster_id(client: &Client, given: Option<ClusterId>) -> Result<ClusterId> {
    if let Some(id) = given {
        return Ok(id);
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    let kube_system = at_startup("reading the kube-system namespace", is_transient, || {
        namespaces.get("kube-system")
    })
    .await
    .context("cannot read the kube-system namespace, whose UID names this cluster in runner names; give --cluster-id instead")?;
    let uid = kube_system.metadata.uid.unwrap_or_default();
    ClusterId::from_namespace_uid(&uid)
        .context("the kube-system namespace has no usable UID; give --cluster-id")
}

/// The Secret, in the operator's namespace, holding the key of the pools' API identities.
pub const IDENTITY_KEY_SECRET: &str = "bbrunner-identity-key";

/// The key of the pools' API identities (`status.apiIdentity`, the budget metric's label):
/// kept in a Secret of the operator's namespace, so that they stay the same across restarts
/// and replicas, and made (32 random bytes) by the first operator that finds none. Without
/// it, an id would be a hash anyone could recompute from a guessed access token.
async fn identity_key(client: &Client, namespace: &str) -> Result<bitbucket::IdentityKey> {
    use k8s_openapi::ByteString;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = IDENTITY_KEY_SECRET;
    for _ in 0..2 {
        let found = at_startup("reading the identity key", is_transient, || {
            secrets.get_opt(name)
        })
        .await
        .with_context(|| format!("cannot read the Secret {namespace}/{name}"))?;
        if let Some(secret) = found {
            let key = secret
                .data
                .as_ref()
                .and_then(|d| d.get("key"))
                .filter(|k| k.0.len() >= 16)
                .with_context(|| format!("the Secret {namespace}/{name} holds no key of 16 bytes or more; delete it, and the operator makes a new one (the pools' status.apiIdentity then changes)"))?;
            return Ok(bitbucket::IdentityKey::new(&key.0));
        }
        let key = bitbucket::IdentityKey::random();
        let secret: Secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "bbrunner".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([("key".to_owned(), ByteString(key.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        match secrets.create(&Default::default(), &secret).await {
            Ok(_) => {
                tracing::info!(
                    namespace,
                    secret = name,
                    "created the key of the pools' API identities"
                );
                return Ok(key);
            }
            // Another replica made it first: read theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the Secret {namespace}/{name}"));
            }
        }
    }
    anyhow::bail!("the Secret {namespace}/{name} was created and is gone again")
}

/// Run until `shutdown` is cancelled.
pub async fn run(client: Client, options: Options, shutdown: CancellationToken) -> Result<()> {
    let metrics = metrics::Metrics::new();
    if let Some(addr) = options.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
        let router = metrics::router(metrics.clone());
        tokio::spawn(serve::serve(
            listener,
            router,
            serve::Limits::DEFAULT,
            shutdown.clone(),
        ));
    }
    let demand = Arc::new(demand::Demand::new(options.clock));
    if let Some((addr, secret)) = &options.webhooks {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --webhook-addr {addr}"))?;
        let router = webhooks::router(webhooks::Webhooks::new(
            secret.clone(),
            demand.clone(),
            metrics.clone(),
        ));
        tracing::info!(%addr, "receiving Bitbucket's webhooks at /webhooks/bitbucket");
        tokio::spawn(serve::serve(
            listener,
            router,
            serve::Limits::DEFAULT,
            shutdown.clone(),
        ));
    }
    let bitbucket = bitbucket::Config {
        api_url: options
            .bitbucket_url
            .parse()
            .context("--bitbucket-url is not a URL")?,
        auth_url: options
            .bitbucket_auth_url
            .parse()
            .context("--bitbucket-auth-url is not a URL")?,
        budget: options.budget,
        identity_key: identity_key(&client, &options.lease_namespace).await?,
        ..bitbucket::Config::default()
    };
    let cluster = cluster_id(&client, options.cluster_id.clone()).await?;
    tracing::info!(cluster = %cluster, "runners this operator creates are named bbrunner.{cluster}.<namespace>.<pool>.<suffix>");
    let ctx = Arc::new(reconcile::Context {
        client: client.clone(),
        hub: hub::Hub::new(bitbucket, metrics.clone()),
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "bbrunner".into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        ),
        settings: options.settings.clone(),
        cluster,
        clock: options.clock,
        queue_waits: Default::default(),
        registrations: reconcile::Registrations::new(options.namespace.clone()),
        secret_references: Default::default(),
        failures: Default::default(),
        demand,
    });

    if !options.leader_election {
        metrics.leader.set(1);
        metrics.set_ready(true);
        controllers(client, &options.namespace, ctx, shutdown).await;
        return Ok(());
    }

    // Unique per process: a restarted operator must not take over its predecessor's lease
    // while that one might still be acting.
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bbrunner".to_owned());
    let suffix: String = std::iter::repeat_with(|| fastrand::alphanumeric().to_ascii_lowercase())
        .take(6)
        .collect();
    let identity = format!("{host}-{}-{suffix}", std::process::id());
    // Two replicas starting together race to create the Lease: the loser tries again.
    let lease_transient = |error: &LeaseManagerError| match error {
        LeaseManagerError::KubeError(error) => is_transient(error),
        LeaseManagerError::LeaseAlreadyExists(_) => true,
        _ => false,
    };
    let manager = at_startup("setting up leader election", lease_transient, || {
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "bbrunner-operator")
            .with_namespace(options.lease_namespace.clone())
            .with_identity(identity.clone())
            .with_duration(15)
            .with_grace(5)
            .build()
    })
    .await
    .context("cannot set up leader election")?;
    let (mut leading, lease_task) = manager.watch().await;
    metrics.set_ready(true);
    loop {
        // Follower: wait for the lease.
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return Ok(()) },
                _ = shutdown.cancelled() => {
                    drop(leading);
                    let _ = lease_task.await;
                    return Ok(());
                }
            }
        }
        tracing::info!(%identity, "leading");
        metrics.leader.set(1);
        let lost = CancellationToken::new();
        let running = tokio::spawn({
            let (client, namespaces, ctx, lost) = (
                client.clone(),
                options.namespace.clone(),
                ctx.clone(),
                lost.clone(),
            );
            async move { controllers(client, &namespaces, ctx, lost).await }
        });
        tokio::select! {
            _ = async { while *leading.borrow_and_update() { if leading.changed().await.is_err() { break } } } => {
                tracing::warn!("lost the leader lease; stopping");
            }
            _ = shutdown.cancelled() => {}
        }
        lost.cancel();
        let _ = running.await;
        metrics.leader.set(0);
        if shutdown.is_cancelled() {
            drop(leading);
            let _ = lease_task.await;
            return Ok(());
        }
    }
}

/// One controller for all namespaces, or one per watched namespace: a namespaced install's
/// RBAC allows no cluster-wide list. Their pools are disjoint, so they share the context.
async fn controllers(
    client: Client,
    namespaces: &[String],
    ctx: Arc<reconcile::Context>,
    stop: CancellationToken,
) {
    if namespaces.is_empty() {
        return controller(client, None, ctx, stop).await;
    }
    futures::future::join_all(
        namespaces
            .iter()
            .map(|ns| controller(client.clone(), Some(ns.clone()), ctx.clone(), stop.clone())),
    )
    .await;
}

async fn controller(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<reconcile::Context>,
    stop: CancellationToken,
) {
    // Metadata-only Apis: the API server sends no pod specs or Secret data.
    type Pods = Api<PartialObjectMeta<Pod>>;
    type Secrets = Api<PartialObjectMeta<Secret>>;
    // Pools are watched untyped and read one by one in the reconcile: one pool that does not
    // parse as the current type (a value past a bound, a field from an older CRD) must not
    // break the watch of every pool.
    let resource = reconcile::pools_resource();
    let (pools, pods, secrets): (Api<DynamicObject>, Pods, Secrets) = match &namespace {
        Some(ns) => (
            Api::namespaced_with(client.clone(), ns, &resource),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (
            Api::all_with(client.clone(), &resource),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    // Every Secret's metadata, for the ones pools read (credentials, imported registrations):
    // a fix to one wakes its pools at once, looked up by name, not by reconciling them all.
    let referenced = secrets.clone();
    let references_ctx = ctx.clone();
    let wake_readers = {
        let resource = resource.clone();
        move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.metadata.namespace.unwrap_or_default();
            let name = secret.metadata.name.unwrap_or_default();
            references_ctx
                .secret_references
                .readers(&namespace, &name)
                .into_iter()
                .map(|pool| ObjectRef::new_with(&pool, resource.clone()).within(&namespace))
                .collect::<Vec<_>>()
        }
    };
    reconcile::release_unused_credentials(&ctx, namespace.as_deref()).await;
    let managed = watcher::Config::default()
        .labels("app.kubernetes.io/managed-by=bbrunner,bbrunner.dev/pool");
    // Pods and Secrets only wake their pool's reconcile, which lists them itself: watch their
    // metadata alone (the owner reference is all the trigger needs), so that the watch
    // streams carry no pod specs or Secret data.
    Controller::new_with(pools, watcher::Config::default(), resource.clone())
        // Backoff: during an API outage, a watch without it retries in a hot loop.
        .owns_stream(
            watcher(pods, managed.clone())
                .default_backoff()
                .touched_objects(),
        )
        .owns_stream(
            watcher(secrets, managed)
                .default_backoff()
                .touched_objects(),
        )
        .watches_stream(
            watcher(referenced, watcher::Config::default())
                .default_backoff()
                .touched_objects(),
            wake_readers,
        )
        // A webhook about a pool's repository wakes it before its poll.
        .reconcile_on(ctx.demand.wakes(namespace.clone(), resource.clone()))
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((pool, _)) => tracing::debug!(pool = %pool.name, "reconciled"),
                // Logged with its pool and reason where it happened.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                // A reconcile queued just before its pool went.
                Err(e @ kube::runtime::controller::Error::ObjectNotFound(_)) => {
                    tracing::debug!(error = %e, "pool gone")
                }
                Err(e) => tracing::warn!(error = %e, "controller error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("injected", "Fault").with_code(code),
        ))
    }

    async fn calls_until_done(failures: u32, code: u16) -> (u32, Result<(), kube::Error>) {
        let calls = AtomicU32::new(0);
        let result = at_startup("a test call", is_transient, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < failures {
                Err(api_error(code))
            } else {
                Ok(())
            }
        })
        .await;
        (calls.load(Ordering::SeqCst), result)
    }

    #[tokio::test]
    async fn startup_calls_outlast_server_errors_but_not_refusals() {
        let (calls, result) = calls_until_done(2, 500).await;
        assert!(result.is_ok() && calls == 3, "{calls} calls: {result:?}");
        let (calls, result) = calls_until_done(1, 429).await;
        assert!(result.is_ok() && calls == 2, "{calls} calls: {result:?}");
        let (calls, result) = calls_until_done(5, 403).await;
        assert!(
            result.is_err() && calls == 1,
            "a refusal was retried: {calls} calls"
        );
    }
}
