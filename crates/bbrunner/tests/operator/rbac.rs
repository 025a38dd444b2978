//! The operator with exactly `bbrunner install`'s RBAC, in a fake-kube that enforces RBAC;
//! and each rule shown to be needed by taking it away.

use super::*;

pub(super) const OPERATOR_NS: &str = "bbrunner-system";

/// `bbrunner install`'s objects.
pub(super) fn install(extra: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_bbrunner"))
        .args(["install", "--namespace", OPERATOR_NS])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// The operator arguments of the install's Deployment that `keep` selects (the tests set the
/// rest themselves).
pub(super) fn deployment_args(docs: &[Value], keep: impl Fn(&str) -> bool) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .clone()
        })
        .filter_map(|a| a.as_str().map(str::to_owned))
        .filter(|a| keep(a))
        .collect()
}

/// The install manifests' RBAC objects and ServiceAccount, optionally without one rule
/// (numbered across the ClusterRole's rules, then the Roles').
fn rbac_objects(docs: Vec<Value>, drop_rule: Option<usize>) -> Vec<Value> {
    let mut index = 0;
    docs.into_iter()
        .filter(|d| {
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&d["kind"].as_str().unwrap_or(""))
        })
        .map(|mut d| {
            if let Some(rules) = d["rules"].as_array_mut() {
                let kept: Vec<Value> = rules
                    .drain(..)
                    .filter(|_| {
                        let keep = Some(index) != drop_rule;
                        index += 1;
                        keep
                    })
                    .collect();
                d["rules"] = json!(kept);
            }
            d
        })
        .collect()
}

pub(super) async fn apply(client: &Client, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap();
    let (group, version) = doc["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap_or(("", doc["apiVersion"].as_str().unwrap()));
    let lower = kind.to_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("applying {kind}: {e}"),
    }
}

/// Run the operator under the ServiceAccount and report whether the pool's whole life works:
/// a runner online, the status written, an event published, and the pool deleted cleanly.
async fn pool_lifecycle_works(install_args: &[&str], drop_rule: Option<usize>) -> bool {
    let docs = install(install_args);
    let namespace_args = deployment_args(&docs, |a| a.starts_with("--namespace="));
    let world = World::start_with(
        &format!("rbac-{}-{drop_rule:?}", install_args.len()).replace(['(', ')'], ""),
        |c| c.rbac = true,
    )
    .await;
    for doc in rbac_objects(docs, drop_rule) {
        apply(&world.client, &doc).await;
    }
    let token = world
        .fake()
        .cluster()
        .issue_token(OPERATOR_NS, "bbrunner-operator");
    let kubeconfig = world.dir.join("operator-kubeconfig");
    std::fs::write(&kubeconfig, world.fake().kubeconfig_with_token(&token)).unwrap();
    let mut args = vec!["--leader-election", "--lease-namespace", OPERATOR_NS];
    args.extend(namespace_args.iter().map(String::as_str));
    let _op = world.operator_with(&kubeconfig, &args, "info", Stdio::null());
    // With a cache, so that the claims' rule is exercised too.
    let mut spec = managed(1, 2);
    spec["cache"] = json!({"size": "1Gi"});
    world.pool("builds", spec).await;
    let events = world.events();
    // A working operator gets here in about two seconds; the margin is for busy CI machines.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut alive = false;
    while Instant::now() < deadline {
        let status = world.status("builds").await;
        let event = events
            .list(&ListParams::default())
            .await
            .map(|l| l.items.iter().any(|e| e.data["reason"] == "RunnerCreated"))
            .unwrap_or(false);
        if online(&world.runners()) == 1 && status["online"] == 1 && event {
            alive = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !alive {
        return false;
    }
    world.delete_pool("builds").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if world.pool_gone("builds").await && world.runners().is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_needs_exactly_the_installed_rbac() {
    assert!(
        pool_lifecycle_works(&[], None).await,
        "the operator fails with the installed RBAC"
    );
    let rules = rbac_objects(install(&[]), None)
        .iter()
        .filter_map(|d| d["rules"].as_array().map(|r| r.len()))
        .sum::<usize>();
    assert_eq!(rules, 9);
    // A few at a time: each failing run waits out its deadline, mostly idle.
    let drops: Vec<usize> = (0..rules).collect();
    for batch in drops.chunks(3) {
        let works = futures::future::join_all(
            batch
                .iter()
                .map(|rule| pool_lifecycle_works(&[], Some(*rule))),
        )
        .await;
        for (rule, works) in batch.iter().zip(works) {
            assert!(!works, "rule {rule} of the installed RBAC is not needed");
        }
    }
}

/// `install --watch-namespace ci`: Roles in `ci` and in the operator's namespace, and of the
/// cluster only kube-system's UID. The operator runs `ci`'s pools with them.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespaced_install_runs_the_pools_of_its_namespaces() {
    let docs = install(&["--watch-namespace", NS]);
    let cluster_rules: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .flat_map(|d| d["rules"].as_array().unwrap())
        .collect();
    assert_eq!(cluster_rules.len(), 1, "{cluster_rules:?}");
    assert_eq!(cluster_rules[0]["resourceNames"], json!(["kube-system"]));
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == NS)
    );
    assert!(
        pool_lifecycle_works(&["--watch-namespace", NS], None).await,
        "the operator fails with the namespaced RBAC"
    );
}
