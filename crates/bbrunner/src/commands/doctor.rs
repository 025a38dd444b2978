use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bbrunner_core::doctor::{
    CredentialsCheck, Observations, PoolCache, PoolFacts, Verdict, api_calls_by_identity, evaluate,
};
use bbrunner_core::labels::Labels;
use bbrunner_core::manifests::Mtu;
use bitbucket::{Client, Config, RunnerScope};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, PostParams};
use serde_json::json;

use crate::cli::{DoctorArgs, TextFormat};
use crate::operator::crd::RunnerPool;
use crate::operator::reconcile::{credentials_from_secret, pools_resource, read_pool};

/// The annotation that makes a StorageClass the cluster's default.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// The message of a pool the operator reported InvalidSpec.
fn invalid_spec(pool: &RunnerPool) -> Option<String> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "InvalidSpec")
        .map(|c| c.message.clone())
}

fn scope_key(pool: &RunnerPool) -> String {
    match &pool.spec.repository {
        Some(r) => format!("{}/{r}", pool.spec.workspace),
        None => pool.spec.workspace.clone(),
    }
}

fn is_empty(r: &Option<k8s_openapi::api::core::v1::ResourceRequirements>) -> bool {
    r.as_ref().is_some_and(|r| {
        r.requests.as_ref().is_none_or(|m| m.is_empty())
            && r.limits.as_ref().is_none_or(|m| m.is_empty())
    })
}

fn facts(pool: &RunnerPool) -> PoolFacts {
    PoolFacts {
        namespace: pool.namespace().unwrap_or_default(),
        name: pool.name_any(),
        scope: scope_key(pool),
        labels: Labels::new(&pool.spec.labels)
            .unwrap_or_else(|_| Labels::new::<_, &str>([]).expect("system labels")),
        dind_image: pool.spec.dind_image(),
        // An invalid MTU is the operator's InvalidSpec to report; the doctor judges the rest.
        mtu: pool.spec.mtu().unwrap_or(Mtu::Auto),
        best_effort: is_empty(&pool.spec.runner.resources) && is_empty(&pool.spec.dind.resources),
        generation: pool.metadata.generation,
        observed_generation: pool.status.as_ref().and_then(|s| s.observed_generation),
        cache: pool.spec.cache.as_ref().map(|cache| {
            let counted = pool.status.as_ref().and_then(|s| s.cache.as_ref());
            PoolCache {
                size: cache.size.clone(),
                storage_class: cache.storage_class_name.clone(),
                workspace_wide: pool.spec.repository.is_none(),
                volumes: counted.map_or(0, |c| c.volumes),
                in_use: counted.map_or(0, |c| c.in_use),
                warm: counted.map_or(0, |c| c.warm),
                skipped: counted.map_or(0, |c| c.skipped),
            }
        }),
    }
}

/// Run a pod that prints its eth0 MTU, read it, delete the pod.
async fn probe_mtu(client: &kube::Client, namespace: &str, image: &str) -> Option<u16> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = format!("bbrunner-mtu-probe-{}", std::process::id());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "bbrunner", "app.kubernetes.io/name": "bbrunner-mtu-probe"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{"name": "probe", "image": image, "command": ["cat", "/sys/class/net/eth0/mtu"],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "16Mi"}}}],
        },
    }))
    .ok()?;
    pods.create(&PostParams::default(), &pod).await.ok()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut mtu = None;
    while Instant::now() < deadline {
        let phase = pods.get(&name).await.ok().and_then(|p| p.status?.phase);
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            mtu = pods
                .logs(&name, &LogParams::default())
                .await
                .ok()
                .and_then(|l| l.trim().parse().ok());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    mtu
}

async fn observe(args: &DoctorArgs) -> Result<Observations> {
    let client = super::kube_client().await?;
    let mut o = Observations {
        server_version: client.apiserver_version().await.ok().map(|v| v.git_version),
        ..Observations::default()
    };

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if let Some(crd) = crds.get_opt("runnerpools.bbrunner.dev").await? {
        o.crd_versions = Some(
            crd.spec
                .versions
                .iter()
                .filter(|v| v.served)
                .map(|v| v.name.clone())
                .collect(),
        );
        let ours = crate::operator::crd::crd();
        let schema = |c: &CustomResourceDefinition| {
            c.spec
                .versions
                .iter()
                .map(|v| serde_json::to_value(&v.schema).ok())
                .collect::<Vec<_>>()
        };
        o.crd_current = schema(&crd) == schema(&ours);
    }

    let leases: Api<Lease> = Api::all(client.clone());
    let lease = leases
        .list(&ListParams::default().fields("metadata.name=bbrunner-operator"))
        .await?
        .items
        .into_iter()
        .next();
    o.lease = lease.and_then(|l| {
        let spec = l.spec?;
        let holder = spec.holder_identity?;
        let renewed = spec.renew_time?.0;
        let age =
            (jiff::Timestamp::now().as_millisecond() - renewed.as_millisecond()) as f64 / 1000.0;
        Some((holder, age.max(0.0)))
    });

    // Untyped, then read one by one: one pool that does not parse must not hide the others.
    let stored: Vec<DynamicObject> = if o.crd_versions.is_some() {
        let resource = pools_resource();
        let api: Api<DynamicObject> = match &args.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.list(&ListParams::default()).await?.items
    } else {
        Vec::new()
    };
    let mut pools: Vec<RunnerPool> = Vec::new();
    for object in &stored {
        let id = format!(
            "{}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        );
        match read_pool(object) {
            Ok(pool) => {
                if let Some(why) = invalid_spec(&pool) {
                    o.invalid_pools.push((id, why));
                }
                pools.push(pool);
            }
            Err(unreadable) => o.invalid_pools.push((id, unreadable.field)),
        }
    }
    o.pools = pools.iter().map(facts).collect();
    let reports: Vec<(String, String, u32)> = pools
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            Some((
                format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                status.api_identity.clone()?,
                status.api_calls_last_hour?,
            ))
        })
        .collect();
    o.api_calls = api_calls_by_identity(&reports);

    let namespaces: BTreeSet<String> = pools
        .iter()
        .filter_map(|p| p.namespace())
        .chain(args.namespace.clone())
        .collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &namespaces {
        let level = ns_api.get_opt(ns).await?.and_then(|n| {
            n.labels()
                .get("pod-security.kubernetes.io/enforce")
                .cloned()
        });
        o.namespace_psa.push((ns.clone(), level));
    }

    for node in Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let runtime = node
            .status
            .and_then(|s| s.node_info)
            .map(|i| i.container_runtime_version)
            .unwrap_or_default();
        o.node_runtimes
            .push((node.metadata.name.unwrap_or_default(), runtime));
    }

    if pools.iter().any(|p| p.spec.cache.is_some()) {
        // Who may run doctor may not list classes: then they are not judged.
        o.storage_classes = Api::<StorageClass>::all(client.clone())
            .list(&ListParams::default())
            .await
            .ok()
            .map(|list| {
                list.items
                    .into_iter()
                    .map(|class| {
                        let default = class.annotations().get(DEFAULT_CLASS).map(String::as_str)
                            == Some("true");
                        (class.name_any(), default)
                    })
                    .collect()
            });
    }

    if let Some(ns) = namespaces.iter().next() {
        o.pod_mtu = probe_mtu(&client, ns, &args.probe_image).await;
    }

    // One list call per credential and scope: validity, scopes and quota at once.
    let mut scopes: BTreeMap<String, Option<usize>> = BTreeMap::new();
    for pool in pools.iter().filter(|p| p.spec.credentials.is_some()) {
        let label = format!(
            "{}/{}",
            pool.namespace().unwrap_or_default(),
            pool.name_any()
        );
        let secret_name = &pool
            .spec
            .credentials
            .as_ref()
            .expect("filtered")
            .secret_ref
            .name;
        let secrets: Api<Secret> =
            Api::namespaced(client.clone(), &pool.namespace().unwrap_or_default());
        let result = match secrets.get_opt(secret_name).await? {
            None => CredentialsCheck::Rejected(format!("Secret {secret_name} does not exist")),
            Some(secret) => match credentials_from_secret(&secret) {
                None => CredentialsCheck::Rejected(format!(
                    "Secret {secret_name} holds no recognised credentials"
                )),
                Some(credentials) => {
                    let config = Config {
                        api_url: args
                            .bitbucket
                            .bitbucket_url
                            .parse()
                            .context("--bitbucket-url")?,
                        auth_url: args
                            .bitbucket
                            .bitbucket_auth_url
                            .parse()
                            .context("--bitbucket-auth-url")?,
                        ..Config::default()
                    };
                    let bitbucket = Client::new(config, credentials).map_err(|e| e.to_string());
                    let scope = match &pool.spec.repository {
                        Some(r) => RunnerScope::Repository {
                            workspace: pool.spec.workspace.clone(),
                            repository: r.clone(),
                        },
                        None => RunnerScope::Workspace(pool.spec.workspace.clone()),
                    };
                    match bitbucket {
                        Err(e) => CredentialsCheck::Rejected(e),
                        Ok(b) => match b.list_runners(&scope).await {
                            Ok(runners) => {
                                scopes.insert(scope_key(pool), Some(runners.len()));
                                CredentialsCheck::Valid
                            }
                            Err(e) => {
                                // The quota line stays, saying it is unknown.
                                scopes.entry(scope_key(pool)).or_insert(None);
                                if e.is_unreachable() {
                                    CredentialsCheck::Unreachable(e.to_string())
                                } else {
                                    CredentialsCheck::Rejected(e.to_string())
                                }
                            }
                        },
                    }
                }
            },
        };
        o.credentials.push((label, result));
    }
    o.scope_runners = scopes.into_iter().collect();

    let pods: Vec<Pod> = match &args.namespace {
        Some(ns) => {
            Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels("bbrunner.dev/pool"))
                .await?
                .items
        }
        None => {
            Api::<Pod>::all(client.clone())
                .list(&ListParams::default().labels("bbrunner.dev/pool"))
                .await?
                .items
        }
    };
    // Every runner pod, the operator's and render's: one registration must run in one pod.
    let labelled = ListParams::default().labels(bbrunner_core::manifests::LABEL_RUNNER_UUID);
    let runner_pods: Vec<Pod> = match &args.namespace {
        Some(ns) => {
            Api::<Pod>::namespaced(client.clone(), ns)
                .list(&labelled)
                .await?
                .items
        }
        None => Api::<Pod>::all(client.clone()).list(&labelled).await?.items,
    };
    o.runner_pods = runner_pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter_map(|p| {
            let uuid = p
                .labels()
                .get(bbrunner_core::manifests::LABEL_RUNNER_UUID)?;
            Some((
                uuid.clone(),
                format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
            ))
        })
        .collect();
    for pod in pods {
        let why = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| {
                c.iter()
                    .find(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
                    .map(|c| c.message.clone().unwrap_or_default())
            });
        if let Some(why) = why {
            o.unschedulable.push((
                format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                why,
            ));
        }
    }
    Ok(o)
}

pub async fn run(args: &DoctorArgs) -> Result<ExitCode> {
    let checks = evaluate(&observe(args).await?);
    match args.format {
        TextFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "checks": checks }))?
        ),
        TextFormat::Text => {
            for c in &checks {
                let tag = match c.verdict {
                    Verdict::Pass => "PASS",
                    Verdict::Warn => "WARN",
                    Verdict::Fail => "FAIL",
                };
                println!("{tag} {:<28} {}", c.name, c.detail);
                if !c.fix.is_empty() {
                    println!("     fix: {}", c.fix);
                }
            }
        }
    }
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
