//! Tests that need the GPU driver or the real embedding model skip, loudly,
//! where those are missing, and fail instead where the environment promises them.
//! The real model is downloaded on first use, by the fetch `serve` runs, so a
//! fresh machine runs those tests instead of skipping them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tessera::inference::model_fetch::{self, Fetched, ModelFetch};

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

/// The real embedding model's directory, downloaded the first time a test asks
/// for it. Tests in one binary share one attempt; the binaries of a run share
/// the installed directory (the fetch's lock file makes concurrent ones wait).
/// Where the download fails, the caller's check of the directory skips, after
/// the reason is printed, or fails where the environment promises the model.
pub fn real_model_dir() -> PathBuf {
    let dir = std::env::var_os("INFERENCE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/all-MiniLM-L6-v2"));
    static FETCHED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(reason) = FETCHED.get_or_init(|| fetch_real_model(&dir)) {
        assert!(
            std::env::var_os(REQUIRE_GPU_AND_MODEL).is_none(),
            "the real model could not be downloaded: {reason}, but {REQUIRE_GPU_AND_MODEL} is set"
        );
        let _ = writeln!(
            std::io::stderr(),
            "the real model could not be downloaded: {reason}"
        );
    }
    dir
}

/// Longest the tests wait for the real model's download (3 s here).
const REAL_MODEL_FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Installs the real model in `dir` unless it is there, on a runtime of its
/// own (the callers may be inside a test's runtime).
fn fetch_real_model(dir: &Path) -> Result<(), String> {
    if model_fetch::is_installed(dir) {
        return Ok(());
    }
    let fetch = ModelFetch::default_model(REAL_MODEL_FETCH_TIMEOUT).into_dir(dir);
    let _ = writeln!(
        std::io::stderr(),
        "downloading the real embedding model into {} (once)",
        dir.display()
    );
    let fetched = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| error.to_string())?;
                runtime
                    .block_on(fetch.run(|_| {}))
                    .map_err(|error| error.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("the download thread panicked".to_owned()))
    })?;
    if let Fetched::Installed { elapsed, .. } = fetched {
        let _ = writeln!(
            std::io::stderr(),
            "the real embedding model is installed ({:.1} s)",
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}
