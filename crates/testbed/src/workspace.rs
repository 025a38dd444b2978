//! Where this repository is, for the files the test bed finds in it (a leaf: every module
//! may use it).

use std::path::PathBuf;

/// The workspace the tests run in.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testbed is two levels down")
        .to_path_buf()
}
