//! The one interface every compute backend implements, so the engine (and the
//! inference service above it) never cares where the math runs.

use super::config::Pooling;
use super::error::EngineError;
use super::tokenizer::TokenBatch;

/// Runs the encoder and pooling on a padded, masked token batch.
pub trait EncoderBackend: Send + Sync + std::fmt::Debug {
    /// A short name for logs and the `embed` command (`cpu`, `gpu`).
    fn name(&self) -> &'static str;

    /// One pooled, not yet normalised, vector per sequence of `batch`. A sequence's
    /// vector must not depend on the other sequences in the batch or on its padding.
    fn encode(&self, batch: &TokenBatch, pooling: Pooling) -> Result<Vec<Vec<f32>>, EngineError>;
}
