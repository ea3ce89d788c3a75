//! `tessera embed`: embeds texts with the local model, no database needed, and
//! prints each vector's size, token count, first values and the time taken.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::CommandError;
use crate::inference::engine::{DeviceChoice, EmbeddingEngine, Precision};

/// How many leading components of each vector `embed` prints.
const EMBED_PREVIEW_VALUES: usize = 5;

/// Loads the model and embeds `texts` off the async runtime, then prints a summary.
pub(super) async fn embed(
    device: DeviceChoice,
    precision: Precision,
    model_dir: PathBuf,
    texts: Vec<String>,
) -> Result<(), CommandError> {
    tokio::task::spawn_blocking(move || embed_and_print(device, precision, &model_dir, &texts))
        .await?
}

fn embed_and_print(
    device: DeviceChoice,
    precision: Precision,
    model_dir: &Path,
    texts: &[String],
) -> Result<(), CommandError> {
    let started = Instant::now();
    let engine = EmbeddingEngine::load(model_dir, device, precision)?;
    let loaded = started.elapsed();
    let started = Instant::now();
    let embeddings = engine.embed(texts)?;
    let took = started.elapsed();
    let info = engine.backend_info();
    println!(
        "model {} on {} ({}, {}, {}, {} weights; loaded in {:.1} ms), {} dimensions",
        engine.model_dir().display(),
        info.backend,
        info.adapter,
        info.api,
        info.device_type,
        info.precision,
        loaded.as_secs_f64() * 1e3,
        engine.dimension()
    );
    for ((text, vector), tokens) in texts
        .iter()
        .zip(&embeddings.vectors)
        .zip(&embeddings.token_counts)
    {
        let preview: Vec<String> = vector
            .iter()
            .take(EMBED_PREVIEW_VALUES)
            .map(|value| format!("{value:.6}"))
            .collect();
        println!("{tokens:4} tokens  [{}, …]  {text:?}", preview.join(", "));
    }
    let total_tokens: usize = embeddings.token_counts.iter().sum();
    println!(
        "embedded {} text(s), {total_tokens} tokens, in {:.2} ms",
        texts.len(),
        took.as_secs_f64() * 1e3
    );
    Ok(())
}
