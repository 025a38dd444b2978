//! The documented pipelines API: what is queued, a commit's `bitbucket-pipelines.yml`, and
//! how long a finished pipeline's steps took.

use reqwest::Method;
use serde::Deserialize;

use super::{Client, MAX_BODY, Request, decode};
use crate::Error;
use crate::model::PipelineStep;

impl Client {
    /// Every step of one pipeline, as `T` reads them.
    async fn pipeline_steps<T: serde::de::DeserializeOwned>(
        &self,
        workspace: &str,
        repository: &str,
        pipeline: &str,
    ) -> Result<Vec<T>, Error> {
        let mut url = self.api_url(&[
            "2.0",
            "repositories",
            workspace,
            repository,
            "pipelines",
            pipeline,
            "steps",
        ]);
        url.query_pairs_mut().append_pair("pagelen", "100");
        let what = format!("listing the steps of pipeline {pipeline}");
        self.list_all("list_steps", url, &what).await
    }

    /// Steps of a repository's pending and in-progress pipelines that have not finished.
    pub async fn active_steps(
        &self,
        workspace: &str,
        repository: &str,
    ) -> Result<Vec<PipelineStep>, Error> {
        let mut url = self.api_url(&["2.0", "repositories", workspace, repository, "pipelines"]);
        url.query_pairs_mut()
            .append_pair("status", "PENDING")
            .append_pair("status", "IN_PROGRESS")
            .append_pair("sort", "-created_on")
            .append_pair("pagelen", "100");
        #[derive(Deserialize)]
        struct Pipeline {
            uuid: String,
        }
        #[derive(Deserialize)]
        struct StepName {
            name: String,
        }
        #[derive(Deserialize)]
        struct Step {
            uuid: String,
            state: StepName,
            #[serde(default)]
            runs_on: Option<Vec<String>>,
        }
        let what = format!("listing the active pipelines of {workspace}/{repository}");
        let pipelines: Vec<Pipeline> = self.list_all("list_pipelines", url, &what).await?;
        let mut steps = Vec::new();
        for pipeline in pipelines {
            let page: Vec<Step> = self
                .pipeline_steps(workspace, repository, &pipeline.uuid)
                .await?;
            steps.extend(
                page.into_iter()
                    .filter(|s| s.state.name != "COMPLETED")
                    .map(|s| PipelineStep {
                        uuid: s.uuid,
                        pipeline_uuid: pipeline.uuid.clone(),
                        state: s.state.name,
                        labels: s.runs_on,
                    }),
            );
        }
        Ok(steps)
    }

    /// The `bitbucket-pipelines.yml` of `commit`, `None` where the repository has none there.
    /// Read no further than the YAML budget ([`bbrunner_core::yaml::MAX_INPUT_BYTES`]).
    pub async fn pipelines_file(
        &self,
        workspace: &str,
        repository: &str,
        commit: &str,
    ) -> Result<Option<String>, Error> {
        let what = format!("bitbucket-pipelines.yml of {workspace}/{repository} at {commit}");
        let request = Request {
            endpoint: "pipelines_file",
            method: Method::GET,
            url: self.api_url(&[
                "2.0",
                "repositories",
                workspace,
                repository,
                "src",
                commit,
                "bitbucket-pipelines.yml",
            ]),
            body: None,
            what: what.clone(),
            max_body: bbrunner_core::yaml::MAX_INPUT_BYTES,
        };
        match self.call(request, true).await {
            Ok(response) => String::from_utf8(response.body.to_vec())
                .map(Some)
                .map_err(|_| Error::Decode {
                    what,
                    message: "not UTF-8 text".into(),
                }),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How long each step of a finished pipeline took (name, seconds): the pipeline by its
    /// build number, else the newest of `commit`, among the repository's recent ones.
    pub async fn finished_steps(
        &self,
        workspace: &str,
        repository: &str,
        build_number: Option<u64>,
        commit: &str,
    ) -> Result<Vec<(String, f64)>, Error> {
        #[derive(Deserialize)]
        struct Page {
            values: Vec<Pipeline>,
        }
        #[derive(Deserialize)]
        struct Pipeline {
            uuid: String,
            #[serde(default)]
            build_number: Option<u64>,
            #[serde(default)]
            target: Option<Target>,
        }
        #[derive(Deserialize)]
        struct Target {
            #[serde(default)]
            commit: Option<Commit>,
        }
        #[derive(Deserialize)]
        struct Commit {
            hash: String,
        }
        #[derive(Deserialize)]
        struct Step {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            duration_in_seconds: Option<f64>,
        }
        let mut url = self.api_url(&["2.0", "repositories", workspace, repository, "pipelines"]);
        url.query_pairs_mut()
            .append_pair("sort", "-created_on")
            .append_pair("pagelen", "50");
        let what = format!("the recent pipelines of {workspace}/{repository}");
        let request = Request {
            endpoint: "list_pipelines",
            method: Method::GET,
            url,
            body: None,
            what: what.clone(),
            max_body: MAX_BODY,
        };
        let page: Page = decode(self.call(request, true).await?, &what)?;
        let of_commit = |p: &Pipeline| {
            p.target
                .as_ref()
                .and_then(|t| t.commit.as_ref())
                .is_some_and(|c| c.hash.eq_ignore_ascii_case(commit))
        };
        let found = page
            .values
            .iter()
            .find(|p| build_number.is_some() && p.build_number == build_number)
            .or_else(|| page.values.iter().find(|p| of_commit(p)));
        let Some(pipeline) = found else {
            return Err(Error::NotFound {
                what: format!("the pipeline of {commit} in {workspace}/{repository}"),
            });
        };
        let steps: Vec<Step> = self
            .pipeline_steps(workspace, repository, &pipeline.uuid)
            .await?;
        Ok(steps
            .into_iter()
            .filter_map(|s| Some((s.name?, s.duration_in_seconds?)))
            .filter(|(_, seconds)| seconds.is_finite() && *seconds >= 0.0)
            .collect())
    }
}
