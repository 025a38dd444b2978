//! Pipelines as Bitbucket runs them: pushed to a branch at a commit, stages in order (the
//! steps of a stage queue together, the next stage when all of them completed, nothing after
//! a failure), the commit's `bitbucket-pipelines.yml` served, and the webhooks Bitbucket sends
//! on the way (`repo:push`, then commit statuses as the pipeline starts and ends).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, ScopeKey, StepRecord, StepState, World, new_uuid};

/// One step of `POST /_fake/pipelines`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineStepRequest {
    pub name: String,
    /// Seconds on the fake's clock.
    pub duration: f64,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub size: Option<String>,
}

/// Body of `POST /_fake/pipelines`: the shape of a simulator trace's pipeline line, with where
/// it is pushed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRequest {
    pub workspace: String,
    pub repository: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Stages in order; the steps of a stage run in parallel.
    pub pipeline: Vec<Vec<PipelineStepRequest>>,
    /// The commit's `bitbucket-pipelines.yml`; by default one that describes `pipeline` for
    /// `branch`. Given, it is served as is (what the operator makes of a hostile file).
    #[serde(default)]
    pub definition: Option<String>,
}

fn default_branch() -> String {
    "main".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PipelineState {
    InProgress,
    Successful,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineRecord {
    pub uuid: String,
    pub build_number: u64,
    pub workspace: String,
    pub repository: String,
    #[serde(skip)]
    pub scope: ScopeKey,
    pub branch: String,
    pub commit: String,
    pub stages: Vec<Vec<PipelineStepRequest>>,
    /// The stage running (or the last one run).
    pub stage: usize,
    pub state: PipelineState,
    pub created_at: f64,
    pub completed_at: Option<f64>,
    #[serde(skip)]
    pub definition: String,
}

/// A webhook Bitbucket would send: its event key and body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEvent {
    pub key: String,
    pub body: Value,
}

/// Where webhooks go and what befalls them (`PUT /_fake/webhooks`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookTarget {
    pub url: Option<String>,
    /// Signs deliveries (`X-Hub-Signature: sha256=…`) when set; never shown back.
    pub secret: Option<String>,
    pub faults: WebhookFaults,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookFaults {
    /// Share of events never delivered.
    pub drop_rate: f64,
    /// Share delivered twice (one `X-Request-UUID`, as Bitbucket's retries are).
    pub duplicate_rate: f64,
    /// Real milliseconds every delivery waits before it is sent (later events may overtake).
    pub delay_ms: u64,
    /// Share held back and sent after the event that follows it.
    pub reorder_rate: f64,
}

/// What became of one attempt to deliver an event.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub event: String,
    pub request_uuid: String,
    pub attempt: u32,
    /// The receiver's answer; none when dropped or the connection failed.
    pub status: Option<u16>,
    pub dropped: bool,
}

/// A `bitbucket-pipelines.yml` that runs `stages` on pushes to `branch`. JSON is YAML.
fn definition_of(branch: &str, stages: &[Vec<PipelineStepRequest>]) -> String {
    let step = |s: &PipelineStepRequest| {
        let mut labels = s.labels.clone();
        if labels.is_empty() {
            labels = vec!["self.hosted".into(), "linux".into()];
        }
        json!({"step": {
            "name": s.name,
            "runs-on": labels,
            "size": s.size.clone().unwrap_or_else(|| "1x".into()),
            "script": [format!("sleep {}", s.duration.round())],
        }})
    };
    let items: Vec<Value> = stages
        .iter()
        .map(|stage| match stage.as_slice() {
            [only] => step(only),
            many => json!({"parallel": many.iter().map(step).collect::<Vec<_>>()}),
        })
        .collect();
    let file = json!({"pipelines": {"branches": {branch: items}}});
    serde_json::to_string_pretty(&file).expect("JSON values serialize")
}

impl World {
    fn repository_json(&self, scope: &ScopeKey, workspace: &str, repository: &str) -> Value {
        json!({
            "type": "repository",
            "full_name": format!("{workspace}/{repository}"),
            "name": repository,
            "uuid": scope.repository_uuid,
            "workspace": {"type": "workspace", "slug": workspace, "uuid": scope.workspace_uuid},
        })
    }

    fn commit_status(&self, pipeline: &PipelineRecord, now: f64) -> Value {
        let state = match pipeline.state {
            PipelineState::InProgress => "INPROGRESS",
            PipelineState::Successful => "SUCCESSFUL",
            PipelineState::Failed => "FAILED",
        };
        json!({
            "commit_status": {
                "type": "build",
                "key": format!("pipeline-{}", pipeline.build_number),
                "state": state,
                "refname": pipeline.branch,
                "name": format!("Pipeline #{} for {}", pipeline.build_number, pipeline.branch),
                "url": format!(
                    "{}/{}/{}/pipelines/results/{}",
                    self.base_url, pipeline.workspace, pipeline.repository, pipeline.build_number
                ),
                "commit": {"type": "commit", "hash": pipeline.commit},
                "created_on": self.timestamp(pipeline.created_at),
                "updated_on": self.timestamp(now),
            },
            "repository": self.repository_json(&pipeline.scope, &pipeline.workspace, &pipeline.repository),
        })
    }

    /// Push `request`'s commit and start its pipeline: `repo:push`, its first stage queued,
    /// and its commit status `INPROGRESS`.
    pub fn create_pipeline(
        &mut self,
        request: &PipelineRequest,
        now: f64,
    ) -> Result<Value, ApiError> {
        let scope = self.scope(&request.workspace, Some(&request.repository))?;
        let count: usize = request.pipeline.iter().map(Vec::len).sum();
        if count == 0 || request.pipeline.iter().any(Vec::is_empty) {
            return Err(ApiError::new(
                400,
                "pipeline: stages of at least one step each",
            ));
        }
        if count > bbrunner_core::lookahead::MAX_PIPELINE_STEPS {
            return Err(ApiError::new(
                400,
                "pipeline: at most 100 steps, as in Bitbucket",
            ));
        }
        if let Some(bad) = request
            .pipeline
            .iter()
            .flatten()
            .find(|s| !(s.duration.is_finite() && s.duration >= 0.0))
        {
            return Err(ApiError::new(
                400,
                format!(
                    "pipeline: step {:?} needs a duration of 0 or more seconds",
                    bad.name
                ),
            ));
        }
        let commit: String = std::iter::repeat_with(|| fastrand::digit(16))
            .take(40)
            .collect();
        let build_number = self.pipelines.len() as u64 + 1;
        let record = PipelineRecord {
            uuid: new_uuid(),
            build_number,
            workspace: request.workspace.clone(),
            repository: request.repository.clone(),
            scope: scope.clone(),
            branch: request.branch.clone(),
            commit: commit.clone(),
            stages: request.pipeline.clone(),
            stage: 0,
            state: PipelineState::InProgress,
            created_at: now,
            completed_at: None,
            definition: request
                .definition
                .clone()
                .unwrap_or_else(|| definition_of(&request.branch, &request.pipeline)),
        };
        let push = json!({
            "push": {"changes": [{
                "new": {
                    "type": "branch",
                    "name": record.branch,
                    "target": {"type": "commit", "hash": commit, "date": self.timestamp(now)},
                },
                "old": null,
                "created": false,
            }]},
            "repository": self.repository_json(&scope, &record.workspace, &record.repository),
            "actor": {"type": "user", "display_name": "Fake Developer"},
        });
        self.outbox.push(WebhookEvent {
            key: "repo:push".into(),
            body: push,
        });
        let status = self.commit_status(&record, now);
        self.outbox.push(WebhookEvent {
            key: "repo:commit_status_created".into(),
            body: status,
        });
        let uuid = record.uuid.clone();
        self.pipelines.push(record);
        self.start_stage(self.pipelines.len() - 1, now);
        Ok(json!({"uuid": uuid, "build_number": build_number, "commit": commit}))
    }

    /// Queue the steps of the pipeline's current stage.
    fn start_stage(&mut self, index: usize, now: f64) {
        let pipeline = &self.pipelines[index];
        let (uuid, scope, workspace, repository) = (
            pipeline.uuid.clone(),
            pipeline.scope.clone(),
            pipeline.workspace.clone(),
            pipeline.repository.clone(),
        );
        let stage = pipeline.stage;
        let steps = pipeline.stages[stage].clone();
        for step in steps {
            let mut record = StepRecord::queued(
                scope.clone(),
                &workspace,
                Some(&repository),
                &step.labels,
                step.size.as_deref(),
                step.duration,
                now,
            );
            record.pipeline_uuid = uuid.clone();
            record.name = Some(step.name);
            record.stage = Some(stage);
            self.queue(record, now);
        }
        // A step no runner could take failed at once.
        self.advance_pipeline(&uuid, now);
    }

    /// After a step of pipeline `uuid` ended: the next stage, or the pipeline's end.
    pub(super) fn advance_pipeline(&mut self, uuid: &str, now: f64) {
        let Some(index) = self.pipelines.iter().position(|p| p.uuid == uuid) else {
            return;
        };
        if self.pipelines[index].state != PipelineState::InProgress {
            return;
        }
        let stage = self.pipelines[index].stage;
        let of_stage: Vec<StepState> = self
            .steps
            .iter()
            .filter(|s| s.pipeline_uuid == uuid && s.stage == Some(stage))
            .map(|s| s.state)
            .collect();
        if of_stage
            .iter()
            .any(|s| matches!(s, StepState::Queued | StepState::Running))
        {
            return;
        }
        let pipeline = &mut self.pipelines[index];
        let failed = of_stage.iter().any(|s| *s != StepState::Completed);
        if !failed && pipeline.stage + 1 < pipeline.stages.len() {
            pipeline.stage += 1;
            self.start_stage(index, now);
            return;
        }
        pipeline.state = if failed {
            PipelineState::Failed
        } else {
            PipelineState::Successful
        };
        pipeline.completed_at = Some(now);
        let status = self.commit_status(&self.pipelines[index], now);
        self.outbox.push(WebhookEvent {
            key: "repo:commit_status_updated".into(),
            body: status,
        });
    }

    /// The file at `commit` of a repository, if the fake has it (only pipelines' definitions).
    pub fn source_file(&self, scope: &ScopeKey, commit: &str, path: &str) -> Option<&str> {
        if path != "bitbucket-pipelines.yml" {
            return None;
        }
        self.pipelines
            .iter()
            .find(|p| &p.scope == scope && p.commit == commit)
            .map(|p| p.definition.as_str())
    }

    /// A pipeline as the pipelines API shows it.
    pub fn pipeline_json(&self, pipeline: &PipelineRecord) -> Value {
        let state = match pipeline.state {
            PipelineState::InProgress => json!({"name": "IN_PROGRESS"}),
            done => {
                json!({"name": "COMPLETED", "result": {"name": if done == PipelineState::Successful { "SUCCESSFUL" } else { "FAILED" }}})
            }
        };
        json!({
            "type": "pipeline",
            "uuid": pipeline.uuid,
            "build_number": pipeline.build_number,
            "state": state,
            "target": {
                "type": "pipeline_ref_target",
                "ref_type": "branch",
                "ref_name": pipeline.branch,
                "commit": {"type": "commit", "hash": pipeline.commit},
            },
            "created_on": self.timestamp(pipeline.created_at),
            "completed_on": pipeline.completed_at.map(|t| self.timestamp(t)),
        })
    }

    /// Webhooks made since the last call, oldest first.
    pub fn take_webhooks(&mut self) -> Vec<WebhookEvent> {
        std::mem::take(&mut self.outbox)
    }
}

/// An opaque id for a request, as Bitbucket's `X-Request-UUID`.
pub fn request_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}
