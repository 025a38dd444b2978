//! The Helm chart (deploy/helm/bbrunner), rendered by the real `helm template`: object for
//! object what `bbrunner install` prints for the same options, strictly valid, and refusing
//! bad values with the field named.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::*;

fn chart() -> String {
    workspace_root()
        .join("deploy/helm/bbrunner")
        .to_string_lossy()
        .into_owned()
}

fn template(namespace: &str, sets: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "bbrunner",
        chart.as_str(),
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Helm's own labels: what the chart adds to `install`'s objects.
const HELM_LABELS: [&str; 4] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];

/// Objects by kind, namespace and name, without the labels only one side sets.
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|mut d| {
            for pointer in ["/metadata/labels", "/spec/template/metadata/labels"] {
                if let Some(map) = d.pointer_mut(pointer).and_then(Value::as_object_mut) {
                    for label in HELM_LABELS {
                        map.remove(label);
                    }
                }
            }
            let key = format!(
                "{} {}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap()
            );
            (key, d)
        })
        .collect()
}

#[test]
fn the_chart_renders_what_install_prints() {
    let cases: [(&[&str], &str, &[&str]); 4] = [
        (&[], "bbrunner-system", &["createNamespace=true"]),
        (
            &[
                "--webhook-secret",
                "bb-hook",
                "--metrics-from-namespace",
                "prom",
            ],
            "bbrunner-system",
            &[
                "createNamespace=true",
                "webhooks.secretName=bb-hook",
                "networkPolicy.metricsFromNamespace=prom",
            ],
        ),
        (
            &["--no-network-policy"],
            "bbrunner-system",
            &["createNamespace=true", "networkPolicy.enabled=false"],
        ),
        (
            &[
                "--replicas",
                "3",
                "--watch-namespace",
                "ci,team-b",
                "--image",
                "registry.example.com/ops/bbrunner:dev",
                "--allowed-image",
                "registry.example.com/ops/*,docker:*-dind",
                "--restrict-pod-fields",
                "--max-cache-size",
                "100Gi",
            ],
            "ops",
            &[
                "createNamespace=true",
                "replicas=3",
                "rbac.watchNamespaces={ci,team-b}",
                "image.repository=registry.example.com/ops/bbrunner",
                "image.tag=dev",
                "policy.allowedImages={registry.example.com/ops/*,docker:*-dind}",
                "policy.restrictPodFields=true",
                "policy.maxCacheSize=100Gi",
            ],
        ),
    ];
    for (install_args, namespace, sets) in cases {
        let mut args = vec!["install", "--namespace", namespace];
        args.extend(install_args);
        let installed = objects(&bbrunner(&args, "").success().stdout);
        let charted = objects(&template(namespace, sets));
        assert_eq!(
            installed.keys().collect::<Vec<_>>(),
            charted.keys().collect::<Vec<_>>(),
            "install {install_args:?} and the chart with {sets:?} make different objects"
        );
        for (key, object) in &installed {
            // The first differing line only: whole objects (the CRD) drown the log.
            let (ours, theirs) = (
                serde_json::to_string_pretty(object).unwrap(),
                serde_json::to_string_pretty(&charted[key]).unwrap(),
            );
            let differing = ours
                .lines()
                .zip(theirs.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("install: {a}\nchart:   {b}"));
            assert!(
                ours == theirs,
                "{key} differs between install {install_args:?} and the chart with {sets:?}:\n{}",
                differing.unwrap_or_else(|| "one is longer".to_owned())
            );
        }
    }
}

#[test]
fn the_chart_s_crd_is_the_operator_s() {
    let committed = std::fs::read_to_string(
        workspace_root().join("deploy/helm/bbrunner/crds/runnerpools.bbrunner.dev.yaml"),
    )
    .unwrap();
    assert!(
        committed == bbrunner(&["crd"], "").success().stdout,
        "deploy/helm/bbrunner/crds drifted; regenerate it with `bbrunner crd > deploy/helm/bbrunner/crds/runnerpools.bbrunner.dev.yaml`"
    );
}

#[test]
fn the_chart_with_monitoring_lints_and_validates_strictly() {
    let chart = chart();
    let everything = [
        "replicas=2",
        "rbac.watchNamespaces={ci}",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.labels.release=kube-prometheus-stack",
    ];
    let mut args = vec!["lint", "--strict", chart.as_str()];
    for set in everything {
        args.extend(["--set", set]);
    }
    let lint = helm(&args);
    assert!(lint.status.success(), "{lint:?}");

    let raw = template("bbrunner-system", &everything);
    // kubernetes-validate knows the built-in kinds; prometheus-operator's are checked below.
    let docs: Vec<Value> = serde_saphyr::from_multiple(&raw).unwrap();
    let builtin: String = docs
        .iter()
        .filter(|d| !d.is_null() && d["apiVersion"] != "monitoring.coreos.com/v1")
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
        .collect();
    assert!(builtin.contains("\"kind\":\"Deployment\""));
    kubernetes_validate_strict(&builtin);

    let rendered = objects(&raw);

    let rule = &rendered["PrometheusRule bbrunner-system/bbrunner-operator"];
    let alerts: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            workspace_root().join("deploy/helm/bbrunner/files/bbrunner-alerts.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"], alerts);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let monitor = &rendered["ServiceMonitor bbrunner-system/bbrunner-operator"];
    let service = &rendered["Service bbrunner-system/bbrunner-operator-metrics"];
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    let chart = chart();
    for (set, named) in [
        ("replicas=0", "replicas"),
        (
            "rbac.watchNamespaces={Not_A_Namespace}",
            "rbac.watchNamespaces",
        ),
        ("image.repositry=typo", "repositry"),
        ("policy.allowedImages={a b}", "policy.allowedImages"),
    ] {
        let out = helm(&["template", "bbrunner", chart.as_str(), "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(named),
            "--set {set}: {stderr}"
        );
    }
}
