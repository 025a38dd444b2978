//! The runner agent's side: its token, its polls (heartbeat and work), a step's completion.
//! Fake-only: the real runner's protocol is private.

use serde_json::{Value, json};

use super::{ApiError, StepState, World, random_token, serves};

impl World {
    pub fn issue_runner_token(&mut self, client_id: &str, client_secret: &str) -> Option<Value> {
        let runner = self
            .runners
            .iter()
            .find(|r| r.oauth_client_id == client_id && r.oauth_client_secret == client_secret)?;
        let token = random_token(40);
        self.runner_tokens
            .insert(token.clone(), runner.uuid.clone());
        Some(json!({"access_token": token, "token_type": "bearer", "expires_in": 3600}))
    }

    /// The agent's token is valid and is this runner's.
    fn authorize_agent(&self, token: &str, runner_uuid: &str) -> Result<(), ApiError> {
        let owner = self
            .runner_tokens
            .get(token)
            .ok_or_else(|| ApiError::new(401, "Invalid or expired runner token"))?;
        if !owner.eq_ignore_ascii_case(runner_uuid) {
            return Err(ApiError::new(403, "This token belongs to another runner"));
        }
        Ok(())
    }

    /// An agent checks in: heartbeat, and when idle and enabled, take the oldest step it can.
    pub fn poll(
        &mut self,
        token: &str,
        runner_uuid: &str,
        session: &str,
        now: f64,
    ) -> Result<Value, ApiError> {
        self.authorize_agent(token, runner_uuid)?;
        let i = self
            .runners
            .iter()
            .position(|r| r.uuid.eq_ignore_ascii_case(runner_uuid))
            .ok_or_else(|| ApiError::new(404, "Runner not found"))?;
        let r = &mut self.runners[i];
        // One agent per runner. A new process (a replacement pod) takes over; an older one
        // that is still polling is a second agent running the same runner: refused, counted.
        if r.displaced.iter().any(|d| d == session) {
            r.duplicate_agent_polls += 1;
            return Err(ApiError::new(
                409,
                "Another runner process took over this runner's credentials",
            ));
        }
        let mut abandoned = None;
        if let Some((held, _)) = &r.session
            && held != session
        {
            r.displaced.push(held.clone());
            // The previous process is gone: a step it held will never finish.
            abandoned = r.step.take();
        }
        r.session = Some((session.to_owned(), now));
        r.last_heartbeat = Some(now);
        if let Some(step) = abandoned {
            self.finish_step(
                &step,
                StepState::Interrupted,
                Some("its runner process restarted"),
                now,
            );
        }
        let r = &mut self.runners[i];
        if !r.enabled || r.step.is_some() {
            return Ok(json!({"step": null}));
        }
        let runner = r.clone();
        let next = self
            .steps
            .iter_mut()
            .filter(|s| s.state == StepState::Queued && serves(&runner, s))
            .min_by(|a, b| a.queued_at.total_cmp(&b.queued_at));
        let Some(step) = next else {
            return Ok(json!({"step": null}));
        };
        step.state = StepState::Running;
        step.started_at = Some(now);
        step.runner_uuid = Some(runner.uuid.clone());
        let assigned = json!({
            "id": step.id,
            "duration_ms": (step.duration_s / self.time_scale * 1000.0).round() as u64,
        });
        let id = step.id.clone();
        let r = &mut self.runners[i];
        r.step = Some(id);
        r.updated_at = now;
        Ok(json!({"step": assigned}))
    }

    pub fn complete(
        &mut self,
        token: &str,
        runner_uuid: &str,
        step_id: &str,
        state: StepState,
        now: f64,
    ) -> Result<(), ApiError> {
        self.authorize_agent(token, runner_uuid)?;
        let running_here = self.steps.iter().any(|s| {
            s.id == step_id
                && s.state == StepState::Running
                && s.runner_uuid
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(runner_uuid))
        });
        if !running_here {
            return Err(ApiError::new(409, "The step is not running on this runner"));
        }
        self.finish_step(step_id, state, None, now);
        if let Some(r) = self
            .runners
            .iter_mut()
            .find(|r| r.uuid.eq_ignore_ascii_case(runner_uuid))
        {
            r.last_heartbeat = Some(now);
        }
        Ok(())
    }
}
