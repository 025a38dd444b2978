//! End-to-end tests of the `bbrunner` binary.

mod import;
mod render;
mod simulate;
mod util;
