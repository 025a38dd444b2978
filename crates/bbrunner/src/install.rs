//! The operator's install manifests, built from Rust: what `bbrunner install` prints and what
//! `deploy/kustomize/` holds. Pure: options in, objects out.

use std::collections::BTreeMap;

use bbrunner_core::admin_policy::AdminPolicy;
use bbrunner_core::manifests;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    Namespace, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

pub const DEFAULT_NAMESPACE: &str = "bbrunner-system";
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/bbrunner/bbrunner:", env!("CARGO_PKG_VERSION"));
const NAME: &str = "bbrunner-operator";
const METRICS_PORT: i32 = 9464;
const WEBHOOKS_PORT: i32 = 8080;
const WEBHOOK_SECRET_DIR: &str = "/etc/bbrunner/webhook";

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub namespace: String,
    pub image: String,
    pub replicas: i32,
    /// Namespaces the operator may act in, with RBAC bound to them alone; none: all.
    pub watch_namespaces: Vec<String>,
    /// What RunnerPools may ask for: the operator enforces it, and so does a
    /// ValidatingAdmissionPolicy at admission.
    pub policy: AdminPolicy,
    /// The Secret (key `secret`) Bitbucket's webhooks are signed with: set, the operator
    /// receives them behind a Service of its own.
    pub webhook_secret: Option<String>,
    /// A NetworkPolicy letting in only the metrics scrapes from this namespace (and the
    /// webhooks, where received); `None`: no policy.
    pub metrics_from_namespace: Option<String>,
}

const POLICY_NAME: &str = "bbrunner-runnerpools";

/// The admin policy at admission: the API server refuses a RunnerPool that breaks it, with
/// the operator's message. Only changes of `spec` are judged, so that a pool created before
/// the policy can still have its finalizers removed and be deleted.
fn admission_policy(policy: &AdminPolicy) -> [Value; 2] {
    let validations = policy
        .cel_validations(
            manifests::DEFAULT_RUNNER_IMAGE,
            manifests::DEFAULT_DIND_IMAGE,
        )
        .into_iter()
        .map(|(expression, message)| Validation {
            expression,
            message: Some(message),
            reason: Some("Forbidden".to_owned()),
            message_expression: None,
        })
        .collect();
    let vap = ValidatingAdmissionPolicy {
        metadata: meta(POLICY_NAME, None),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec!["bbrunner.dev".to_owned()]),
                    api_versions: Some(vec!["*".to_owned()]),
                    operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                    resources: Some(vec!["runnerpools".to_owned()]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "spec-changed".to_owned(),
                expression: "oldObject == null || object.spec != oldObject.spec".to_owned(),
            }]),
            validations: Some(validations),
            ..Default::default()
        }),
        status: None,
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: meta(POLICY_NAME, None),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(POLICY_NAME.to_owned()),
            validation_actions: Some(vec!["Deny".to_owned()]),
            ..Default::default()
        }),
    };
    [json(&vap), json(&binding)]
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "bbrunner".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "operator".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "bbrunner-install".to_owned(),
        ),
    ])
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The cluster's default identity in runner names: the kube-system namespace's UID.
fn kube_system_rule() -> PolicyRule {
    PolicyRule {
        resource_names: Some(vec!["kube-system".to_owned()]),
        ..rule(&[""], &["namespaces"], &["get"])
    }
}

/// Exactly what the operator calls in the namespaces it watches: each rule is needed by a
/// named part of it.
fn pool_rules() -> Vec<PolicyRule> {
    vec![
        // The controller watches pools; the finalizer is added and removed by patch.
        rule(
            &["bbrunner.dev"],
            &["runnerpools"],
            &["get", "list", "watch", "patch"],
        ),
        rule(&["bbrunner.dev"], &["runnerpools/status"], &["patch"]),
        // One pod per runner: watched as owned objects, created, deleted, annotated.
        rule(
            &[""],
            &["pods"],
            &["get", "list", "watch", "create", "delete", "patch"],
        ),
        // Runner registrations; the pools' credentials, which hold a finalizer (patch) while
        // a pool uses them.
        rule(
            &[""],
            &["secrets"],
            &["get", "list", "watch", "create", "delete", "patch"],
        ),
        // The warm cache's claims: listed per pool, created, marked when handed to a pod
        // (patch), deleted past `retain`.
        rule(
            &[""],
            &["persistentvolumeclaims"],
            &["list", "create", "patch", "delete"],
        ),
        // Events of runner creation, draining, deletion and scaling.
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
    ]
}

/// Leader election, in the operator's namespace only, on its own Lease only (a create
/// cannot be limited by name); with `identity_secret`, the Secret of the key of its API
/// identities there too (where no other role grants Secrets in that namespace).
fn lease_rules(identity_secret: bool) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(&["coordination.k8s.io"], &["leases"], &["create"]),
        PolicyRule {
            resource_names: Some(vec![NAME.to_owned()]),
            ..rule(&["coordination.k8s.io"], &["leases"], &["get", "patch"])
        },
    ];
    if identity_secret {
        rules.push(rule(&[""], &["secrets"], &["create"]));
        rules.push(PolicyRule {
            resource_names: Some(vec![crate::operator::IDENTITY_KEY_SECRET.to_owned()]),
            ..rule(&[""], &["secrets"], &["get"])
        });
    }
    rules
}

fn operator_deployment(o: &InstallOptions) -> Deployment {
    // Always the Lease: a rollout, a node that stops answering or a second install must
    // never leave two operators acting, whatever the replica count.
    let mut args = vec![
        "operator".to_owned(),
        format!("--metrics-addr=0.0.0.0:{METRICS_PORT}"),
        "--log-format=json".to_owned(),
        "--leader-election".to_owned(),
    ];
    if !o.watch_namespaces.is_empty() {
        args.push(format!("--namespace={}", o.watch_namespaces.join(",")));
    }
    args.extend(
        o.policy
            .allowed_images
            .iter()
            .map(|p| format!("--allowed-image={}", p.as_str())),
    );
    if o.policy.restrict_pod_fields {
        args.push("--restrict-pod-fields".to_owned());
    }
    if let Some(cap) = &o.policy.max_cache_size {
        args.push(format!("--max-cache-size={}", cap.as_str()));
    }
    let mut ports = vec![ContainerPort {
        name: Some("metrics".to_owned()),
        container_port: METRICS_PORT,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }];
    let (mut volumes, mut mounts) = (None, None);
    if let Some(secret) = &o.webhook_secret {
        args.push(format!("--webhook-addr=0.0.0.0:{WEBHOOKS_PORT}"));
        args.push(format!("--webhook-secret-file={WEBHOOK_SECRET_DIR}/secret"));
        ports.push(ContainerPort {
            name: Some("webhooks".to_owned()),
            container_port: WEBHOOKS_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        });
        volumes = Some(vec![Volume {
            name: "webhook-secret".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: "secret".to_owned(),
                    path: "secret".to_owned(),
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        mounts = Some(vec![VolumeMount {
            name: "webhook-secret".to_owned(),
            mount_path: WEBHOOK_SECRET_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        }]);
    }
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let quantity = |s: &str| Quantity(s.to_owned());
    let selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "bbrunner".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "operator".to_owned(),
        ),
    ]);
    Deployment {
        metadata: meta(NAME, Some(&o.namespace)),
        spec: Some(DeploymentSpec {
            replicas: Some(o.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            // One replica: the old pod is gone before the new one starts. Several: a rolling
            // update keeps a standby ready, and the Lease keeps one acting.
            strategy: Some(DeploymentStrategy {
                type_: Some(
                    if o.replicas > 1 {
                        "RollingUpdate"
                    } else {
                        "Recreate"
                    }
                    .to_owned(),
                ),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.to_owned()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "operator".to_owned(),
                        image: Some(o.image.clone()),
                        args: Some(args),
                        env: Some(vec![EnvVar {
                            name: "POD_NAMESPACE".to_owned(),
                            value_from: Some(EnvVarSource {
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.namespace".to_owned(),
                                    api_version: None,
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ports: Some(ports),
                        volume_mounts: mounts,
                        liveness_probe: Some(probe("/healthz", 20)),
                        readiness_probe: Some(probe("/readyz", 10)),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_owned(), quantity("50m")),
                                ("memory".to_owned(), quantity("64Mi")),
                            ])),
                            limits: Some(BTreeMap::from([(
                                "memory".to_owned(),
                                quantity("256Mi"),
                            )])),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                add: None,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    volumes,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "bbrunner".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "operator".to_owned(),
        ),
    ])
}

/// Only what the operator serves, from whom it is for: metrics to the monitoring namespace,
/// webhooks (where received) to anyone, since Bitbucket reaches them through an ingress. The
/// operator's own calls out (the API server, Bitbucket) are not limited.
fn network_policy(o: &InstallOptions, monitoring: &str) -> NetworkPolicy {
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        end_port: None,
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    monitoring.to_owned(),
                )])),
                match_expressions: None,
            }),
            ..Default::default()
        }]),
        ports: Some(vec![port("metrics")]),
    }];
    if o.webhook_secret.is_some() {
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![port("webhooks")]),
        });
    }
    NetworkPolicy {
        metadata: meta(NAME, Some(&o.namespace)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels()),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

fn json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("Kubernetes objects serialise to JSON")
}

/// Every object, in apply order.
pub fn manifests(o: &InstallOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let namespace = Namespace {
        metadata: ObjectMeta {
            labels: Some({
                let mut l = labels();
                // The operator itself needs no privilege; runner pods live in pool namespaces.
                l.insert(
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "restricted".to_owned(),
                );
                l
            }),
            ..meta(ns, None)
        },
        ..Default::default()
    };
    let account = ServiceAccount {
        metadata: meta(NAME, Some(ns)),
        ..Default::default()
    };
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: NAME.to_owned(),
        namespace: Some(ns.to_owned()),
        api_group: None,
    };
    // Bound to a list of namespaces, the cluster-wide role keeps only what cannot be
    // namespaced: reading kube-system's UID.
    let cluster_rules = if o.watch_namespaces.is_empty() {
        let mut rules = pool_rules();
        rules.push(kube_system_rule());
        rules
    } else {
        vec![kube_system_rule()]
    };
    let cluster_role = ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(cluster_rules),
        aggregation_rule: None,
    };
    let cluster_binding = ClusterRoleBinding {
        metadata: meta(NAME, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: NAME.to_owned(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    let namespaced_rbac = o
        .watch_namespaces
        .iter()
        .flat_map(|watched| {
            let role = Role {
                metadata: meta(NAME, Some(watched)),
                rules: Some(pool_rules()),
            };
            let binding = RoleBinding {
                metadata: meta(NAME, Some(watched)),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "Role".to_owned(),
                    name: NAME.to_owned(),
                },
                subjects: Some(vec![subject.clone()]),
            };
            [json(&role), json(&binding)]
        })
        .collect::<Vec<_>>();
    let lease_role = Role {
        metadata: meta("bbrunner-leader-election", Some(ns)),
        rules: Some(lease_rules(
            !o.watch_namespaces.is_empty() && !o.watch_namespaces.iter().any(|w| w == ns),
        )),
    };
    let lease_binding = RoleBinding {
        metadata: meta("bbrunner-leader-election", Some(ns)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: "bbrunner-leader-election".to_owned(),
        },
        subjects: Some(vec![subject]),
    };
    let service = |name: &str, port: i32| Service {
        metadata: meta(&format!("bbrunner-operator-{name}"), Some(ns)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some(name.to_owned()),
                port,
                target_port: Some(IntOrString::String(name.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    // One replica: allow a drain to move it; several: keep one acting.
    let budget = if o.replicas > 1 {
        (Some(IntOrString::Int(1)), None)
    } else {
        (None, Some(IntOrString::Int(1)))
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(NAME, Some(ns)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: budget.0,
            max_unavailable: budget.1,
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/name".to_owned(), "bbrunner".to_owned()),
                    (
                        "app.kubernetes.io/component".to_owned(),
                        "operator".to_owned(),
                    ),
                ])),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        status: None,
    };
    let mut objects = vec![
        json(&namespace),
        json(&crate::operator::crd::crd()),
        json(&account),
        json(&cluster_role),
        json(&cluster_binding),
    ];
    objects.extend(namespaced_rbac);
    objects.extend([
        json(&lease_role),
        json(&lease_binding),
        json(&operator_deployment(o)),
        json(&service("metrics", METRICS_PORT)),
        json(&pdb),
    ]);
    if o.webhook_secret.is_some() {
        // Port 80 in front: an Ingress or a gateway terminates TLS for Bitbucket.
        objects.push(json(&service("webhooks", 80)));
    }
    if let Some(monitoring) = &o.metrics_from_namespace {
        objects.push(json(&network_policy(o, monitoring)));
    }
    if !o.policy.is_empty() {
        objects.extend(admission_policy(&o.policy));
    }
    objects
}
