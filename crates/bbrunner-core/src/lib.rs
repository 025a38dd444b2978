#![forbid(unsafe_code)]
//! The pure domain of bbrunner: no IO, no async, no clock. Everything here is a function of
//! its inputs, which is what lets the CLI, the operator and the simulator share it.

pub mod admin_policy;
pub mod cache;
pub mod clock_skew;
pub mod demand;
pub mod dockerd;
pub mod doctor;
pub mod forecast;
pub mod ids;
pub mod import;
pub mod labels;
#[cfg(feature = "lint")]
pub mod lint;
pub mod lookahead;
pub mod manifests;
pub mod migrate;
pub mod ownership;
pub mod plan;
pub mod pool;
pub mod queue_wait;
pub mod reason;
pub mod registration;
pub mod scaling;
pub mod schedule;
pub mod simulate;
pub mod units;
pub mod webhook;
pub mod yaml;
