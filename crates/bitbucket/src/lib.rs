#![forbid(unsafe_code)]
//! Async client for Bitbucket Cloud's runners API (internal, used by Atlassian's own
//! autoscaler) and the pipelines API, built for an operator: typed errors, retries that can
//! never leak a runner, and a request budget under Bitbucket's 1,000 requests per hour.
//!
//! Retry policy: reads, state changes and deletes are idempotent and are retried on 5xx,
//! transport errors and 429 (exponential backoff with jitter, at least `Retry-After`).
//! Creating a runner is never retried: a retry after a lost response would create a second
//! runner. A failed create is reported; the caller lists runners (they carry a name it chose)
//! to find out whether it happened.

mod budget;
mod client;
mod credentials;
mod error;
mod model;

pub use budget::RequestBudget;
pub use client::{Client, Config, RequestObserver, RetryPolicy, RunnerScope};
pub use credentials::{Credentials, IdentityKey};
pub use error::Error;
pub use model::{
    CreatedRunner, PipelineStep, Runner, RunnerState, RunnerStatus, RunnerVersion, StepRef,
};
