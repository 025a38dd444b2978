//! Bitbucket's webhook payloads, read as what they say about pipelines: a push that will
//! start one, a pull request that will, a pipeline's commit status as it starts and ends.
//! Pure: the operator verifies the signature and the size, then hands the body here. A body is
//! hostile input: every field read is checked, and what is missing or mistyped is named.

use serde_json::Value;
use thiserror::Error;

use crate::lookahead::Trigger;

/// The events bbrunner reads, by `X-Event-Key`.
pub const EVENTS: [&str; 5] = [
    "repo:push",
    "repo:commit_status_created",
    "repo:commit_status_updated",
    "pullrequest:created",
    "pullrequest:updated",
];

/// Nesting deeper than this is refused before anything is read: no real payload comes near.
pub const MAX_DEPTH: usize = 32;

/// Pushes per delivery read: Bitbucket lists at most a few changes per push.
pub const MAX_CHANGES: usize = 16;

/// A repository, as `workspace/slug`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepositoryName {
    pub workspace: String,
    pub slug: String,
}

/// How a pipeline's commit status stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Ended,
}

/// What a delivery says.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineEvent {
    /// A commit pushed (or a pull request opened or updated): its pipeline is about to start.
    Pushed {
        repository: RepositoryName,
        commit: String,
        trigger: Trigger,
    },
    /// A pipeline's commit status changed.
    Status {
        repository: RepositoryName,
        commit: String,
        status: Status,
        /// From the status' URL, where it names the pipeline's build number.
        build_number: Option<u64>,
        /// When Bitbucket changed it (Unix seconds), to refuse an old delivery.
        updated_at: Option<f64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookError {
    #[error(
        "X-Event-Key {0:?} is not an event bbrunner reads; subscribe the webhook to repository push, build status created and updated, pull request created and updated"
    )]
    UnknownEvent(String),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body nests deeper than {MAX_DEPTH} levels; no Bitbucket payload does")]
    TooDeep,
    #[error("{field}: {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
}

fn depth(value: &Value) -> usize {
    // Iterative, so that the check itself cannot overflow the stack.
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        if level > MAX_DEPTH {
            break;
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

fn text<'a>(value: &'a Value, field: &'static str) -> Result<&'a str, WebhookError> {
    match value {
        Value::String(s) if !s.is_empty() && s.len() <= 1024 => Ok(s),
        Value::Null => Err(WebhookError::Field {
            field,
            problem: "missing",
        }),
        _ => Err(WebhookError::Field {
            field,
            problem: "expected a string of 1 to 1024 characters",
        }),
    }
}

fn commit(value: &Value, field: &'static str) -> Result<String, WebhookError> {
    let hash = text(value, field)?;
    if !(7..=64).contains(&hash.len()) || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(WebhookError::Field {
            field,
            problem: "expected a commit hash (7 to 64 hex digits)",
        });
    }
    Ok(hash.to_ascii_lowercase())
}

fn repository(body: &Value) -> Result<RepositoryName, WebhookError> {
    let full = text(&body["repository"]["full_name"], "repository.full_name")?;
    match full.split_once('/') {
        Some((workspace, slug))
            if !workspace.is_empty() && !slug.is_empty() && !slug.contains('/') =>
        {
            Ok(RepositoryName {
                workspace: workspace.to_owned(),
                slug: slug.to_owned(),
            })
        }
        _ => Err(WebhookError::Field {
            field: "repository.full_name",
            problem: "expected workspace/repository",
        }),
    }
}

/// The build number a Pipelines status URL ends with (`…/pipelines/results/42`).
fn build_number(url: &str) -> Option<u64> {
    let tail = url.trim_end_matches('/').rsplit('/').next()?;
    tail.parse().ok()
}

/// Read a delivery of `event` (its `X-Event-Key`) with `body`.
pub fn parse(event: &str, body: &[u8]) -> Result<Vec<PipelineEvent>, WebhookError> {
    if !EVENTS.contains(&event) {
        return Err(WebhookError::UnknownEvent(event.chars().take(64).collect()));
    }
    // serde_json refuses nesting past 128 on its own; past MAX_DEPTH is refused here.
    let body: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::NotJson(e.to_string()))?;
    if depth(&body) > MAX_DEPTH {
        return Err(WebhookError::TooDeep);
    }
    let repository = repository(&body)?;
    match event {
        "repo:push" => {
            let changes = body["push"]["changes"]
                .as_array()
                .ok_or(WebhookError::Field {
                    field: "push.changes",
                    problem: "expected a list",
                })?;
            let mut events = Vec::new();
            for change in changes.iter().take(MAX_CHANGES) {
                let new = &change["new"];
                // A deleted branch or tag starts nothing.
                if new.is_null() {
                    continue;
                }
                let name = text(&new["name"], "push.changes[].new.name")?.to_owned();
                let trigger = match text(&new["type"], "push.changes[].new.type")? {
                    "branch" | "named_branch" => Trigger::Branch(name),
                    "tag" | "annotated_tag" => Trigger::Tag(name),
                    _ => continue,
                };
                events.push(PipelineEvent::Pushed {
                    repository: repository.clone(),
                    commit: commit(&new["target"]["hash"], "push.changes[].new.target.hash")?,
                    trigger,
                });
            }
            Ok(events)
        }
        "pullrequest:created" | "pullrequest:updated" => {
            let source = &body["pullrequest"]["source"];
            Ok(vec![PipelineEvent::Pushed {
                repository,
                commit: commit(&source["commit"]["hash"], "pullrequest.source.commit.hash")?,
                trigger: Trigger::PullRequest {
                    source: text(&source["branch"]["name"], "pullrequest.source.branch.name")?
                        .to_owned(),
                },
            }])
        }
        _ => {
            let status = &body["commit_status"];
            let state = match text(&status["state"], "commit_status.state")? {
                "INPROGRESS" => Status::InProgress,
                "SUCCESSFUL" | "FAILED" | "STOPPED" => Status::Ended,
                _ => {
                    return Err(WebhookError::Field {
                        field: "commit_status.state",
                        problem: "expected INPROGRESS, SUCCESSFUL, FAILED or STOPPED",
                    });
                }
            };
            let updated_at = status["updated_on"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond() as f64 / 1000.0);
            Ok(vec![PipelineEvent::Status {
                repository,
                commit: commit(&status["commit"]["hash"], "commit_status.commit.hash")?,
                status: state,
                build_number: status["url"].as_str().and_then(build_number),
                updated_at,
            }])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

    fn repo() -> Value {
        json!({"full_name": "acme/app", "name": "app"})
    }

    fn parsed(event: &str, body: Value) -> Result<Vec<PipelineEvent>, WebhookError> {
        parse(event, &serde_json::to_vec(&body).unwrap())
    }

    #[test]
    fn pushes_name_their_commit_and_what_starts_the_pipeline() {
        let body = json!({"repository": repo(), "push": {"changes": [
            {"new": {"type": "branch", "name": "main", "target": {"hash": HASH}}},
            {"new": {"type": "tag", "name": "v1", "target": {"hash": HASH}}},
            {"new": null, "old": {"type": "branch", "name": "gone"}},
        ]}});
        let events = parsed("repo:push", body).unwrap();
        let acme = RepositoryName {
            workspace: "acme".into(),
            slug: "app".into(),
        };
        assert_eq!(
            events,
            [
                PipelineEvent::Pushed {
                    repository: acme.clone(),
                    commit: HASH.into(),
                    trigger: Trigger::Branch("main".into())
                },
                PipelineEvent::Pushed {
                    repository: acme,
                    commit: HASH.into(),
                    trigger: Trigger::Tag("v1".into())
                },
            ]
        );
    }

    #[test]
    fn pull_requests_and_statuses_are_read() {
        let pr = json!({"repository": repo(), "pullrequest": {"source": {
            "branch": {"name": "feature/x"}, "commit": {"hash": "abcdef1"}}}});
        assert!(matches!(
            &parsed("pullrequest:updated", pr).unwrap()[0],
            PipelineEvent::Pushed { trigger: Trigger::PullRequest { source }, .. } if source == "feature/x"
        ));
        let status = json!({"repository": repo(), "commit_status": {
            "state": "SUCCESSFUL", "commit": {"hash": HASH},
            "url": "https://bitbucket.org/acme/app/pipelines/results/42",
            "updated_on": "2026-01-01T10:00:00.000000Z"}});
        assert_eq!(
            parsed("repo:commit_status_updated", status).unwrap(),
            [PipelineEvent::Status {
                repository: RepositoryName {
                    workspace: "acme".into(),
                    slug: "app".into()
                },
                commit: HASH.into(),
                status: Status::Ended,
                build_number: Some(42),
                updated_at: Some(1_767_261_600.0),
            }]
        );
    }

    #[test]
    fn hostile_bodies_get_a_named_refusal() {
        let field = |event: &str, body: Value| match parsed(event, body) {
            Err(WebhookError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("repo:push", json!({})), "repository.full_name");
        assert_eq!(
            field("repo:push", json!({"repository": {"full_name": 7}})),
            "repository.full_name"
        );
        assert_eq!(
            field("repo:push", json!({"repository": repo()})),
            "push.changes"
        );
        assert_eq!(
            field(
                "repo:push",
                json!({"repository": repo(), "push": {"changes": [{"new": {"type": "branch", "name": "m", "target": {"hash": "not-hex"}}}]}})
            ),
            "push.changes[].new.target.hash"
        );
        let huge = "x".repeat(5000);
        assert_eq!(
            field("repo:push", json!({"repository": {"full_name": huge}})),
            "repository.full_name"
        );
        assert_eq!(
            field(
                "repo:commit_status_created",
                json!({"repository": repo(), "commit_status": {"state": "MAYBE"}})
            ),
            "commit_status.state"
        );
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            parse("repo:push", deep.as_bytes()),
            Err(WebhookError::TooDeep)
        );
        let deeper = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse("repo:push", deeper.as_bytes()),
            Err(WebhookError::NotJson(_))
        ));
        assert!(matches!(
            parse("repo:push", b"{"),
            Err(WebhookError::NotJson(_))
        ));
        assert!(matches!(
            parse("issue:created", b"{}"),
            Err(WebhookError::UnknownEvent(_))
        ));
    }
}
