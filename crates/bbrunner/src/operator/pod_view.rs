//! Runner pods as the reconcile reads them: metadata, the two status fields the planner
//! uses, and the claims the pod mounts (the warm cache). Listing full pods for every pool at every poll made pod specs the operator's largest
//! memory use (heaptrack over the load benchmark, BENCHMARKS.md); serde skips the fields this
//! view leaves out without allocating them.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct PodView {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodViewSpec>,
    #[serde(default)]
    pub status: Option<PodViewStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodViewSpec {
    #[serde(default)]
    pub volumes: Vec<VolumeView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    pub persistent_volume_claim: Option<ClaimReference>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimReference {
    pub claim_name: String,
}

impl PodView {
    /// The PersistentVolumeClaims the pod mounts.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.spec
            .iter()
            .flat_map(|s| &s.volumes)
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.as_str())
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodViewStatus {
    pub phase: Option<String>,
    #[serde(default)]
    pub conditions: Vec<PodCondition>,
}

impl kube::Resource for PodView {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
