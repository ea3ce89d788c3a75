//! The one interface every compute backend implements, so the engine (and the
//! inference service above it) never cares where the math runs.

use super::config::Pooling;
use super::error::EngineError;
use super::tokenizer::TokenBatch;

/// What a backend runs on, for the startup log, `/ready` and the models listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// `cpu` or `gpu`.
    pub backend: &'static str,
    /// The adapter's (or processor's) name.
    pub adapter: String,
    /// The API the work goes through (`vulkan`, `metal`, `dx12`, or the CPU kernels).
    pub api: String,
    /// `discrete_gpu`, `integrated_gpu`, `virtual_gpu`, `other` or `cpu`.
    pub device_type: String,
    /// How the weights are stored (`f32`, `bf16` on the CPU, `f16` on the GPU);
    /// arithmetic accumulates in `f32`.
    pub precision: &'static str,
}

/// Runs the encoder, pooling and normalisation on a padded, masked token batch.
pub trait EncoderBackend: Send + Sync + std::fmt::Debug {
    /// What this backend runs on.
    fn info(&self) -> BackendInfo;

    /// One unit-length (L2-normalised) pooled vector per sequence of `batch`. A
    /// sequence's vector must not depend on the other sequences in the batch or on
    /// its padding.
    fn encode(&self, batch: &TokenBatch, pooling: Pooling) -> Result<Vec<Vec<f32>>, EngineError>;
}
