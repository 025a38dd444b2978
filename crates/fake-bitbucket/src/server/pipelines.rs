//! The pipelines API (documented: pipelines, their steps, a commit's files) and
//! `POST /_fake/pipelines`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{App, PageQuery, authorize, paginate, served};
use crate::world::{ApiError, PipelineRequest, StepRecord, StepState};

fn step_state(state: StepState) -> &'static str {
    match state {
        StepState::Queued => "PENDING",
        StepState::Running => "IN_PROGRESS",
        StepState::Completed | StepState::Failed | StepState::Interrupted => "COMPLETED",
    }
}

/// The statuses a list asks for (`?status=PENDING&status=IN_PROGRESS`); none: all.
fn statuses(uri: &Uri) -> Vec<String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.strip_prefix("status=").map(str::to_owned))
        .collect()
}

pub(super) async fn list_pipelines(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((ws, repo)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let identity = authorize(&app, &headers, "repository:read")?;
    let wanted = statuses(&uri);
    let world = app.world();
    let scope = world.scope(&ws, Some(&repo))?;
    // (created, pipeline): pipelines made whole, and steps submitted alone (one pipeline
    // each).
    let mut items: Vec<(f64, Value)> = world
        .pipelines
        .iter()
        .filter(|p| p.scope == scope)
        .map(|p| (p.created_at, world.pipeline_json(p)))
        .chain(
            world
                .steps
                .iter()
                .filter(|s| s.scope == scope && s.stage.is_none())
                .map(|s| {
                    (
                        s.queued_at,
                        json!({
                            "type": "pipeline",
                            "uuid": s.pipeline_uuid,
                            "state": {"name": step_state(s.state)},
                        }),
                    )
                }),
        )
        .filter(|(_, p)| wanted.is_empty() || wanted.iter().any(|w| p["state"]["name"] == **w))
        .collect();
    // Newest first, as `sort=-created_on` asks.
    items.sort_by(|a, b| b.0.total_cmp(&a.0));
    let items = items.into_iter().map(|(_, p)| p).collect();
    Ok(served(
        &identity,
        Json(paginate(items, &query, &world.base_url, &uri)),
    ))
}

fn step_json(world: &crate::world::World, s: &StepRecord) -> Value {
    let mut step = json!({
        "type": "pipeline_step",
        "uuid": s.id,
        "state": {"name": step_state(s.state)},
        "runs_on": s.labels,
    });
    if let Some(name) = &s.name {
        step["name"] = json!(name);
    }
    if let Some(started) = s.started_at {
        step["started_on"] = json!(world.timestamp(started));
        if let Some(finished) = s.finished_at {
            step["completed_on"] = json!(world.timestamp(finished));
            step["duration_in_seconds"] = json!((finished - started).round() as u64);
        }
    }
    step
}

pub(super) async fn list_steps(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((ws, repo, pipeline)): Path<(String, String, String)>,
    Query(query): Query<PageQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let identity = authorize(&app, &headers, "repository:read")?;
    let world = app.world();
    let scope = world.scope(&ws, Some(&repo))?;
    let known = world
        .pipelines
        .iter()
        .any(|p| p.scope == scope && p.uuid.eq_ignore_ascii_case(&pipeline));
    let items: Vec<Value> = world
        .steps
        .iter()
        .filter(|s| s.scope == scope && s.pipeline_uuid.eq_ignore_ascii_case(&pipeline))
        .map(|s| step_json(&world, s))
        .collect();
    if items.is_empty() && !known {
        return Err(ApiError::new(404, format!("Pipeline {pipeline} not found")));
    }
    Ok(served(
        &identity,
        Json(paginate(items, &query, &world.base_url, &uri)),
    ))
}

/// `GET /2.0/repositories/{ws}/{repo}/src/{commit}/{path}`: the raw file.
pub(super) async fn source_file(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((ws, repo, commit, path)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    let identity = authorize(&app, &headers, "repository:read")?;
    let world = app.world();
    let scope = world.scope(&ws, Some(&repo))?;
    let text = world
        .source_file(&scope, &commit, &path)
        .ok_or_else(|| ApiError::new(404, format!("No such file: {path} at {commit}")))?;
    Ok(served(
        &identity,
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text.to_owned(),
        ),
    ))
}

pub(super) async fn fake_create_pipeline(
    State(app): State<Arc<App>>,
    Json(request): Json<PipelineRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = app.now();
    let created = app.world().create_pipeline(&request, now)?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(super) async fn fake_pipelines(State(app): State<Arc<App>>) -> Response {
    Json(json!(app.world().pipelines)).into_response()
}
