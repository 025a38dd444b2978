//! End-to-end tests of the `bbrunner` binary.

mod crd;
mod demo;
mod docs;
mod helm;
mod import;
mod install;
mod kubectl;
mod lint;
mod live;
mod migrate;
mod processes;
mod render;
mod simulate;
mod util;
