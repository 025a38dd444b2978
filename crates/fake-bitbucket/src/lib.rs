#![forbid(unsafe_code)]
//! fake-bitbucket: a Bitbucket Cloud test double speaking the real HTTP protocol for
//! everything bbrunner uses (runners API, OAuth client credentials, workspace and repository
//! lookups, pipelines and steps), plus runner agents and fault injection. What it models and
//! where it knowingly differs is in docs/architecture.md.

pub mod agent;
mod server;
pub mod world;

pub use agent::{AgentConfig, RunnerAgent};
pub use server::{FakeBitbucket, FakeConfig, signature};
pub use world::{
    Faults, NoMatch, PipelineRequest, PipelineStepRequest, StepRequest, WebhookFaults,
    WebhookTarget,
};
