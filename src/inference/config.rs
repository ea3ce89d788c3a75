//! The inference domain's settings: which device and model, dynamic batching,
//! request limits and the `embed_texts` job size.

use std::path::PathBuf;
use std::time::Duration;

use crate::core::config::{ConfigError, Vars};
use crate::inference::engine::{DEFAULT_MODEL_DIR, DeviceChoice};

/// Embedding engine and inference API settings.
#[derive(Debug, Clone)]
pub struct InferenceConfig {
    /// `INFERENCE_DEVICE`: `auto`, `gpu` or `cpu`.
    pub device: DeviceChoice,
    /// `INFERENCE_MODEL_DIR`: the sentence-transformers model directory.
    pub model_dir: PathBuf,
    /// `INFERENCE_BATCH_MAX_TOKENS`: most tokens in one engine call.
    pub batch_max_tokens: usize,
    /// `INFERENCE_BATCH_MAX_WAIT_MS`: longest a request waits for others to share its batch.
    pub batch_max_wait: Duration,
    /// `INFERENCE_QUEUE_CAPACITY`: most requests waiting for the engine; more get 503.
    pub queue_capacity: usize,
    /// `INFERENCE_MAX_INPUTS`: most inputs in one embeddings request (OpenAI's limit).
    pub max_inputs: usize,
    /// `INFERENCE_TRUNCATE`: cut over-long inputs instead of refusing them, when a
    /// request does not say.
    pub truncate: bool,
    /// `INFERENCE_RATE_LIMIT_PER_MINUTE`: requests per user per minute on each
    /// replica; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// `INFERENCE_BATCH_JOB_MAX_TEXTS`: most texts in one `embed_texts` execution.
    pub batch_job_max_texts: usize,
}

impl Default for InferenceConfig {
    /// The documented defaults (`.env.example`), the one place they are written.
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            batch_max_tokens: 8192,
            batch_max_wait: Duration::ZERO,
            queue_capacity: 256,
            max_inputs: 2048,
            truncate: false,
            rate_limit_per_minute: 1200,
            batch_job_max_texts: 100_000,
        }
    }
}

impl InferenceConfig {
    /// Reads the inference variables over [`InferenceConfig::default`].
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let default_wait_ms = u64::try_from(defaults.batch_max_wait.as_millis()).unwrap_or(0);
        Ok(Self {
            device: vars.parse("INFERENCE_DEVICE", defaults.device)?,
            model_dir: vars.parse("INFERENCE_MODEL_DIR", defaults.model_dir)?,
            batch_max_tokens: vars
                .positive("INFERENCE_BATCH_MAX_TOKENS", defaults.batch_max_tokens)?,
            batch_max_wait: Duration::from_millis(
                vars.parse("INFERENCE_BATCH_MAX_WAIT_MS", default_wait_ms)?,
            ),
            queue_capacity: vars.positive("INFERENCE_QUEUE_CAPACITY", defaults.queue_capacity)?,
            max_inputs: vars.positive("INFERENCE_MAX_INPUTS", defaults.max_inputs)?,
            truncate: vars.parse("INFERENCE_TRUNCATE", defaults.truncate)?,
            rate_limit_per_minute: vars.parse(
                "INFERENCE_RATE_LIMIT_PER_MINUTE",
                defaults.rate_limit_per_minute,
            )?,
            batch_job_max_texts: vars.positive(
                "INFERENCE_BATCH_JOB_MAX_TEXTS",
                defaults.batch_job_max_texts,
            )?,
        })
    }
}
