//! End-to-end tests of the `bbrunner` binary.

mod import;
mod render;
mod util;
