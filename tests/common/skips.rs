//! Tests that need the GPU driver or the real embedding model skip, loudly,
//! where those are missing, and fail instead where the environment promises them.

use std::io::Write;
use std::path::PathBuf;

use super::repo_root;

/// Set (as CI does) to make a missing GPU adapter or model a failure instead of a skip.
pub const REQUIRE_GPU_AND_MODEL: &str = "TESSERA_REQUIRE_GPU_AND_MODEL";

/// Reports a test as skipped, loudly, or fails it where the environment promises
/// the GPU driver and the model are installed. The line goes straight to stderr:
/// the test harness captures `eprintln!` of passing tests, and a skip must be seen.
pub fn skip(test: &str, reason: &str) {
    assert!(
        std::env::var_os(REQUIRE_GPU_AND_MODEL).is_none(),
        "{test}: {reason}, but {REQUIRE_GPU_AND_MODEL} is set"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

/// The real embedding model's directory (`task model-fetch` installs it).
pub fn real_model_dir() -> PathBuf {
    std::env::var_os("INFERENCE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/all-MiniLM-L6-v2"))
}
