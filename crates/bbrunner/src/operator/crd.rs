//! The `RunnerPool` custom resource (`bbrunner.dev/v1alpha1`).

use std::collections::BTreeMap;

use bbrunner_core::pool::ScalingSpec;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Runners with these labels, between min and max, kept ready by bbrunner.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bbrunner.dev",
    version = "v1alpha1",
    kind = "RunnerPool",
    namespaced,
    shortname = "rp",
    category = "bbrunner",
    doc = "Bitbucket Pipelines self-hosted runners with these labels, between min and max, kept ready by the bbrunner operator.",
    status = "RunnerPoolStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.scaling.min"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.scaling.max"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired"}"#,
    printcolumn = r#"{"name":"Online","type":"integer","jsonPath":".status.online"}"#,
    printcolumn = r#"{"name":"Busy","type":"integer","jsonPath":".status.busy"}"#,
    printcolumn = r#"{"name":"Draining","type":"integer","jsonPath":".status.disabled"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Policy","type":"string","priority":1,"jsonPath":".spec.scaling.policy"}"#,
    printcolumn = r#"{"name":"Outdated","type":"integer","priority":1,"jsonPath":".status.outdated"}"#,
    validation = Rule::new("size(self.metadata.name) <= 40 && !self.metadata.name.contains('.')").message("a RunnerPool name is at most 40 characters, without dots (runner and pod names are derived from it)"),
)]
#[x_kube(validation = Rule::new("!has(self.scaling) || !has(self.scaling.min) || !has(self.scaling.max) || self.scaling.min <= self.scaling.max").message("spec.scaling.min must not exceed spec.scaling.max"))]
#[x_kube(validation = Rule::new("self.mode != 'static' || (has(self.staticRunners) && size(self.staticRunners) > 0)").message("a static pool needs spec.staticRunners"))]
#[x_kube(validation = Rule::new("self.mode != 'managed' || has(self.credentials)").message("a managed pool needs spec.credentials.secretRef"))]
#[serde(rename_all = "camelCase")]
pub struct RunnerPoolSpec {
    /// Workspace slug or `{uuid}`.
    pub workspace: String,
    /// Repository slug or `{uuid}`, for repository runners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Custom labels; `self.hosted` and `linux` are implied.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(l, l.matches('^[a-z0-9.]{1,50}$'))").message("labels use lowercase letters, digits and dots, at most 50 characters"))]
    #[x_kube(validation = Rule::new("size(self) <= 8").message("at most 8 custom labels: Bitbucket allows 10 with self.hosted and linux"))]
    pub labels: Vec<String>,
    /// Bitbucket API credentials (managed mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,
    #[serde(default)]
    pub mode: PoolMode,
    /// Imported registrations to run (static mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_runners: Vec<StaticRunner>,
    #[serde(default)]
    pub scaling: ScalingSpec,
    /// Replace a runner after each step it runs.
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub runner: RunnerContainerSpec,
    #[serde(default)]
    pub dind: DindContainerSpec,
    #[serde(default)]
    pub pod_template: PodTemplateSpec,
    /// Warm runners: a persistent Docker cache per runner slot (off when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
}

/// Each runner pod's dind keeps Docker's images and layers on a PersistentVolumeClaim of the
/// pool (`<pool>-cache-<n>`), handed from one pod to the next and never to two at once, so
/// that a new runner starts with what the last one pulled and built. Every step the pool runs
/// shares what is cached: one pool is one trust boundary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Each claim's size, a whole number with a suffix, such as 50Gi.
    #[schemars(regex(pattern = r"^[0-9]{1,15}(k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"))]
    pub size: String,
    /// The claims' StorageClass (default: the cluster's default). Its volumes must support
    /// the ReadWriteOncePod access mode, as CSI drivers do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// How many claims to keep when the pool shrinks (default: spec.scaling.max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub retain: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Runners are created and deleted through Bitbucket's API.
    #[default]
    Managed,
    /// Runners created in the UI and imported with `bbrunner import`.
    Static,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
}

/// A Secret holding one of: `oauthClientId` + `oauthClientSecret`, `email` + `apiToken`,
/// `username` + `appPassword`, or `accessToken`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    pub secret_ref: SecretRef,
}

/// A Secret holding a registration as `bbrunner import --format yaml --reveal-secret` prints it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticRunner {
    pub secret_ref: SecretRef,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StepSize {
    #[default]
    #[serde(rename = "1x")]
    X1,
    #[serde(rename = "2x")]
    X2,
    #[serde(rename = "4x")]
    X4,
    #[serde(rename = "8x")]
    X8,
}

impl From<StepSize> for bbrunner_core::manifests::RunnerSize {
    fn from(size: StepSize) -> Self {
        match size {
            StepSize::X1 => Self::X1,
            StepSize::X2 => Self::X2,
            StepSize::X4 => Self::X4,
            StepSize::X8 => Self::X8,
        }
    }
}

impl RunnerPoolSpec {
    /// The step size served, defaulted.
    pub fn size(&self) -> bbrunner_core::manifests::RunnerSize {
        self.runner.size.unwrap_or_default().into()
    }

    /// dind's image, defaulted.
    pub fn dind_image(&self) -> String {
        self.dind
            .image
            .clone()
            .unwrap_or_else(|| bbrunner_core::manifests::DEFAULT_DIND_IMAGE.to_owned())
    }

    /// dind's MTU, defaulted; the error names `spec.dind.mtu`.
    pub fn mtu(&self) -> Result<bbrunner_core::manifests::Mtu, String> {
        use bbrunner_core::manifests::Mtu;
        let raw = match &self.dind.mtu {
            None => return Ok(Mtu::Auto),
            Some(IntOrString::String(s)) => s.clone(),
            Some(IntOrString::Int(n)) => n.to_string(),
        };
        Mtu::parse(&raw).map_err(|e| format!("spec.dind.{e}"))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerContainerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment for the runner container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Largest step size served (default 1x); sizes dind's memory and disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<StepSize>,
    /// Disk for Docker's images and layers in GiB (default 20 per size unit); the clone and
    /// the step's logs get a quarter of it each. Past these the kubelet evicts the runner, busy
    /// or not: raise it for steps with large images.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "diskGiB")]
    #[schemars(range(min = 1, max = 4096))]
    pub disk_gib: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DindContainerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `auto` (default: the pod's eth0 MTU) or a number from 576 to 9216.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 'auto' || (int(self) >= 576 && int(self) <= 9216)").message("mtu is auto or a number from 576 to 9216"))]
    pub mtu: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_mirrors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub desired: u32,
    #[serde(default)]
    pub starting: u32,
    #[serde(default)]
    pub online: u32,
    #[serde(default)]
    pub busy: u32,
    #[serde(default)]
    pub idle: u32,
    #[serde(default)]
    pub disabled: u32,
    #[serde(default)]
    pub offline: u32,
    /// Runners made from the current spec (labels and pod template), and from an earlier one,
    /// not yet replaced (busy ones are, once their step is done).
    #[serde(default)]
    pub updated: u32,
    #[serde(default)]
    pub outdated: u32,
    /// The last generation every runner was made from: `observedGeneration` says the spec was
    /// read, this that it reached every runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
    /// Since when the pool has had more runners than its policy wants (RFC 3339).
    // Serialized as null when the surplus ends: the status is a merge patch, which keeps
    // absent fields, and a stale time would cut the next scale-down delay short.
    #[serde(default)]
    pub surplus_since: Option<String>,
    /// Share of the last hour (exponentially weighted) with at least one step running, as of
    /// `occupancyTime`; from 0.5 the pool keeps one warm runner fewer than `minIdle`, from 0.8 two
    /// fewer (at least one).
    #[serde(default)]
    pub occupancy: Option<f64>,
    /// When `occupancy` had that value (RFC 3339).
    #[serde(default)]
    pub occupancy_time: Option<String>,
    /// Whether a step has been running since `occupancyTime`.
    #[serde(default)]
    pub occupied: Option<bool>,
    /// The pool's demand forecast: the peak of busy runners (plus queued steps where known) it
    /// saw in each 15 minutes of the week, from Monday 00:00 UTC, one byte per slot in
    /// half-runners (255: not seen), base64; each week's peak counts half. Remove the field to
    /// make the pool learn again.
    #[serde(default)]
    pub demand_profile: Option<String>,
    /// Start of the 15 minutes being observed (RFC 3339), and its peak demand so far.
    #[serde(default)]
    pub demand_slot_time: Option<String>,
    #[serde(default)]
    pub demand_slot_peak: Option<u32>,
    /// The credentials Secret this pool holds the `bbrunner.dev/credentials-in-use` finalizer
    /// on, released when the pool stops using it.
    #[serde(default)]
    pub credentials_secret: Option<String>,
    /// The Bitbucket identity the pool's calls count against (an opaque id) and this
    /// operator's calls with it in the last hour, to the nearest 10 below: `bbrunner doctor`
    /// sums them against Bitbucket's 1,000 per hour.
    #[serde(default)]
    pub api_identity: Option<String>,
    #[serde(default)]
    pub api_calls_last_hour: Option<u32>,
    /// How often the pool polls Bitbucket: its `pollInterval`, or longer where the pools of
    /// its identity would otherwise spend more than three fifths of the budget on runner
    /// lists (each scope of the identity gets an even share).
    #[serde(default)]
    pub poll_interval_in_effect: Option<String>,
    /// The warm cache's claims, for a pool with `spec.cache` (or claims left from one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// Claims of the pool.
    pub volumes: u32,
    /// Mounted by a runner pod, or just handed to one.
    pub in_use: u32,
    /// Free and used before: the next runner pods start warm on them.
    pub warm: u32,
    /// Passed over for a while: a pod could not be scheduled with them (see the
    /// CacheVolumeUnschedulable Events).
    #[serde(default)]
    pub skipped: u32,
}

/// The CRD as installed: kube's derive, plus what the API server must enforce so that it
/// never stores a pool the operator cannot read: a bound on every integer (the API server
/// ignores `format: int32` and `uint32`) and a floor under the poll interval.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = RunnerPool::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        bound_integers(schema);
        // A real API server refuses a CEL rule whose worst-case cost it cannot bound: lists
        // and strings that rules read get bounds (above any a pool needs; the rules and the
        // operator say the real limits, with their own messages).
        if let Some(labels) = property(schema, &["spec", "labels"]) {
            bound_list(labels, 32, 64);
        }
        if let Some(args) = property(schema, &["spec", "dind", "extraArgs"]) {
            bound_list(args, 64, 4096);
            args.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: DIND_TCP_RULE.to_owned(),
                message: Some("dind.extraArgs may open the Docker API on TCP only with TLS client verification: end the arguments with --tlsverify (and certificates); a later --tlsverify=false or --tls alone leaves it open to anyone. Write unix sockets as --host=unix://PATH".to_owned()),
                ..Default::default()
            }]);
        }
        if let Some(env) = property(schema, &["spec", "runner", "env"]) {
            env.max_items = Some(256);
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = env.items.as_mut() {
                for (field, limit) in [("name", 256), ("value", 32768)] {
                    if let Some(p) = item.properties.as_mut().and_then(|p| p.get_mut(field)) {
                        p.max_length = Some(limit);
                    }
                }
            }
            env.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: "self.all(e, e.name != 'DOCKER_HOST' || (has(e.value) && e.value.startsWith('unix://')))".to_owned(),
                message: Some("runner.env DOCKER_HOST may only name a unix:// socket: dind serves its API on the unix socket alone".to_owned()),
                ..Default::default()
            }]);
        }
        for field in ["labels", "annotations"] {
            if let Some(map) = property(schema, &["spec", "podTemplate", field]) {
                map.max_properties = Some(256);
                map.x_kubernetes_validations = Some(vec![ValidationRule {
                    rule: RESERVED_KEYS_RULE.to_owned(),
                    message: Some(format!(
                        "podTemplate.{field} may not use the bbrunner.dev/ prefix: the operator keeps its own bookkeeping there; rename the key"
                    )),
                    ..Default::default()
                }]);
            }
        }
        if let Some(poll) = property(schema, &["spec", "scaling", "pollInterval"]) {
            poll.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: "duration(self) >= duration('1s')".to_owned(),
                message: Some(
                    "pollInterval is at least 1s, written like 15s, 1m or 1m30s".to_owned(),
                ),
                ..Default::default()
            }]);
        }
    }
    crd
}

/// What admission can tell of dockerd's arguments (the operator reads them as dockerd does,
/// `bbrunner_core::dockerd`): any `--host`/`-H` that is not a unix or fd socket written in one
/// word needs `--tlsverify` and no `--tlsverify=false`. Stricter than dockerd where a rule
/// cannot see word order, never looser.
const DIND_TCP_RULE: &str = "!self.exists(a, a.matches('^(--host(=|$)|-[Dvh]*H)') && !a.matches('^(--host=|-[Dvh]*H=?)(unix|fd)://')) || (self.exists(a, a == '--tlsverify' || a.matches('^--tlsverify=(1|t|T|true|TRUE|True)$')) && !self.exists(a, a.matches('^--tlsverify=(0|f|F|false|FALSE|False)$')))";

/// Label and annotation keys of the bbrunner.dev domain (and its subdomains) are the
/// operator's: a pod's pool, runner, template revision and whether it ran a step.
const RESERVED_KEYS_RULE: &str =
    "self.all(k, !k.startsWith('bbrunner.dev/') && !k.matches('^[^/]*[.]bbrunner[.]dev/'))";

/// The schema at `path` below `schema`'s properties.
fn property<'a>(schema: &'a mut JSONSchemaProps, path: &[&str]) -> Option<&'a mut JSONSchemaProps> {
    path.iter().try_fold(schema, |s, key| {
        s.properties.as_mut().and_then(|p| p.get_mut(*key))
    })
}

/// At most `items` strings of at most `length` characters each.
fn bound_list(list: &mut JSONSchemaProps, items: i64, length: i64) {
    list.max_items = Some(items);
    if let Some(JSONSchemaPropsOrArray::Schema(item)) = list.items.as_mut() {
        item.max_length = Some(length);
    }
}

fn bound_integers(schema: &mut JSONSchemaProps) {
    // The schema's bounds are JSON numbers: a 64-bit bound must be one a float holds exactly,
    // or a real API server refuses every object ("Maximum boundary value must be of type
    // integer with format int64").
    const EXACT: f64 = 9_007_199_254_740_991.0;
    if schema.type_.as_deref() == Some("integer") {
        let (min, max) = match schema.format.as_deref() {
            Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
            Some("uint32") => (0.0, f64::from(u32::MAX)),
            Some("uint64") | Some("uint") => (0.0, EXACT),
            _ => (-EXACT, EXACT),
        };
        schema.minimum.get_or_insert(min);
        schema.maximum.get_or_insert(max);
        // Kubernetes knows int32 and int64 only (it warns of any other on every apply); the
        // bounds above keep what the unsigned formats said.
        if schema.format.as_deref() != Some("int32") {
            schema.format = Some("int64".into());
        }
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.iter_mut().flat_map(|i| match i {
            JSONSchemaPropsOrArray::Schema(s) => std::slice::from_mut(s.as_mut()),
            JSONSchemaPropsOrArray::Schemas(v) => v.as_mut_slice(),
        }))
        .chain(
            schema
                .additional_properties
                .iter_mut()
                .filter_map(|a| match a {
                    JSONSchemaPropsOrBool::Schema(s) => Some(s.as_mut()),
                    JSONSchemaPropsOrBool::Bool(_) => None,
                }),
        )
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten());
    for child in children {
        bound_integers(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every integer in the schema, with its path, lacking a minimum or a maximum, or of a
    /// format Kubernetes does not know.
    fn unbounded(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if schema["type"] == "integer"
            && (schema["maximum"].is_null()
                || schema["minimum"].is_null()
                || !["int32", "int64"].contains(&schema["format"].as_str().unwrap_or("")))
        {
            out.push(path.to_owned());
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, v) in props {
                unbounded(v, &format!("{path}.{k}"), out);
            }
        }
        for key in ["items", "additionalProperties"] {
            if schema[key].is_object() {
                unbounded(&schema[key], &format!("{path}[]"), out);
            }
        }
    }

    #[test]
    fn every_integer_of_the_crd_is_bounded_and_the_poll_interval_has_a_floor() {
        let crd = serde_json::to_value(crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        unbounded(schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "integers without bounds or of an unknown format: {missing:?}"
        );
        let scaling = &schema["properties"]["spec"]["properties"]["scaling"]["properties"];
        assert_eq!(
            scaling["schedules"]["items"]["properties"]["min"]["maximum"],
            100.0
        );
        let rules = scaling["pollInterval"]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("duration('1s')"), "{rules}");
    }

    #[test]
    fn policy_memory_is_cleared_through_a_merge_patch() {
        // Absent fields survive a merge patch; memory that ended must be sent as null.
        let status = serde_json::to_value(RunnerPoolStatus::default()).unwrap();
        for key in [
            "surplusSince",
            "occupancy",
            "occupancyTime",
            "occupied",
            "demandProfile",
            "demandSlotTime",
            "demandSlotPeak",
            "credentialsSecret",
        ] {
            assert!(
                status.get(key).is_some_and(serde_json::Value::is_null),
                "{key} missing from {status}"
            );
        }
    }
}
