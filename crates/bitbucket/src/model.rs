use bbrunner_core::ids::RunnerUuid;
use secrecy::SecretString;
use serde::Deserialize;

/// A runner as the runners API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Runner {
    pub uuid: RunnerUuid,
    pub name: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub state: RunnerState,
    #[serde(default)]
    pub created_on: Option<String>,
    #[serde(default)]
    pub updated_on: Option<String>,
}

impl Runner {
    /// Busy means a step is assigned, whatever the status says (a disabled runner finishes its
    /// step).
    pub fn is_busy(&self) -> bool {
        self.state.step.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerState {
    pub status: RunnerStatus,
    #[serde(default)]
    pub updated_on: Option<String>,
    #[serde(default)]
    pub cordoned: bool,
    #[serde(default)]
    pub version: Option<RunnerVersion>,
    #[serde(default)]
    pub step: Option<StepRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunnerStatus {
    /// Created, never connected.
    Unregistered,
    Online,
    Offline,
    Disabled,
    Enabled,
    /// A status this client does not know; treated as not usable.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerVersion {
    #[serde(default)]
    pub current: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StepRef {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub uuid: String,
}

/// A runner just created, with its OAuth client: the secret is shown only in this response.
#[derive(Debug, Clone)]
pub struct CreatedRunner {
    pub runner: Runner,
    pub oauth_client_id: String,
    pub oauth_client_secret: SecretString,
}

/// A pending or running step of a pipeline.
///
/// What is known: the step's uuid, its pipeline, and its state (`PENDING`, `READY`,
/// `IN_PROGRESS`, ...). What is not: Bitbucket's public step object documents no `runs-on`
/// labels, so `labels` is `None` unless the response carries a `runs_on` list (bbrunner's
/// fake does); consumers must fall back to label-blind demand when it is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineStep {
    pub uuid: String,
    pub pipeline_uuid: String,
    pub state: String,
    pub labels: Option<Vec<String>>,
}
