//! The inference domain's settings: which device and model, dynamic batching,
//! admission limits (inputs, tokens and tokenizing per request, tokens per user)
//! and the `embed_texts` job size.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::core::config::{AppEnv, ConfigError, Vars};
use crate::inference::engine::{DEFAULT_MODEL_DIR, DeviceChoice, Precision};
use crate::inference::model_fetch::DEFAULT_FETCH_TIMEOUT_SECONDS;

/// `INFERENCE_MODEL_FETCH`: whether a missing default model is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFetchMode {
    /// Download the default model in the background when its directory is
    /// missing, so a first run serves embeddings with no other command.
    Auto,
    /// Never download: the model is provided (the image carries its own), and a
    /// missing one is reported, not fetched behind the operator's back.
    Never,
}

impl FromStr for ModelFetchMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "never" => Ok(Self::Never),
            _ => Err("expected auto or never".to_owned()),
        }
    }
}

/// Embedding engine and inference API settings.
#[derive(Debug, Clone)]
pub struct InferenceConfig {
    /// `INFERENCE_DEVICE`: `auto`, `gpu` or `cpu`.
    pub device: DeviceChoice,
    /// `INFERENCE_PRECISION`: `f32` or `bf16`, how the encoder's weights are
    /// stored (bf16 halves their memory, f16 on a GPU; arithmetic stays f32).
    pub precision: Precision,
    /// `INFERENCE_MODEL_DIR`: the sentence-transformers model directory.
    pub model_dir: PathBuf,
    /// `INFERENCE_MODEL_FETCH`: `auto` downloads the default model when its
    /// directory is missing (the default outside production), `never` does not.
    pub model_fetch: ModelFetchMode,
    /// `INFERENCE_MODEL_FETCH_TIMEOUT_SECONDS`: longest that download may take.
    pub model_fetch_timeout: Duration,
    /// `INFERENCE_BATCH_MAX_TOKENS`: most tokens in one engine call; unset,
    /// [`InferenceConfig::batch_tokens_for`] picks by backend.
    pub batch_max_tokens: Option<usize>,
    /// `INFERENCE_BATCH_MAX_WAIT_MS`: longest a request waits for others to share its batch.
    pub batch_max_wait: Duration,
    /// `INFERENCE_QUEUE_CAPACITY`: most requests waiting for the engine; more get 503.
    pub queue_capacity: usize,
    /// `INFERENCE_MAX_INPUTS`: most inputs in one embeddings request (OpenAI's limit).
    pub max_inputs: usize,
    /// `INFERENCE_MAX_REQUEST_TOKENS`: most tokens one request may hold in all
    /// (OpenAI's limit), so one request is a bounded amount of engine work.
    pub max_request_tokens: usize,
    /// `INFERENCE_TRUNCATE`: cut over-long inputs instead of refusing them, when a
    /// request does not say.
    pub truncate: bool,
    /// `INFERENCE_TOKENS_PER_MINUTE`: model tokens each user may spend a minute on
    /// each replica, API requests and `embed_texts` runs together; 0 turns the limit off.
    pub tokens_per_minute: u64,
    /// `INFERENCE_TOKENIZE_CONCURRENCY`: requests tokenized at once (CPU work off
    /// the async runtime); the number of cores by default.
    pub tokenize_concurrency: usize,
    /// `INFERENCE_TOKENIZE_QUEUE`: requests waiting for a tokenizing slot; more get 503.
    pub tokenize_queue: usize,
    /// `INFERENCE_BATCH_JOB_MAX_TEXTS`: most texts in one `embed_texts` execution.
    pub batch_job_max_texts: usize,
    /// `APP_ENV=production`: clients are told that inference is unavailable in a
    /// stable sentence, never the reason (it names paths on the server; the log has it).
    pub production: bool,
}

impl Default for InferenceConfig {
    /// The documented defaults (`.env.example`), the one place they are written.
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            precision: Precision::F32,
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            model_fetch: ModelFetchMode::Auto,
            model_fetch_timeout: Duration::from_secs(DEFAULT_FETCH_TIMEOUT_SECONDS),
            batch_max_tokens: None,
            batch_max_wait: Duration::ZERO,
            queue_capacity: 256,
            max_inputs: 2048,
            max_request_tokens: 300_000,
            truncate: false,
            tokens_per_minute: 1_000_000,
            tokenize_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            tokenize_queue: 256,
            batch_job_max_texts: 100_000,
            production: false,
        }
    }
}

/// Tokens in one engine call when `INFERENCE_BATCH_MAX_TOKENS` is unset, on
/// the CPU and on a GPU. An engine call cannot be interrupted, so its length
/// bounds how long another user's one sentence waits behind someone's large
/// request: on a 2-core CPU, under a flood, that sentence's p99 was 12 s with
/// 8,192-token calls and 2 s with 1,024 (`task bench-noisy`), and short
/// sentences batch well within 1,024; a GPU runs 8,192 in milliseconds and
/// needs batches that large to be busy.
pub const DEFAULT_BATCH_TOKENS: (usize, usize) = (1_024, 8_192);

impl InferenceConfig {
    /// The tokens of one engine call on `backend` (`cpu` or `gpu`).
    pub fn batch_tokens_for(&self, backend: &str) -> usize {
        let (cpu, gpu) = DEFAULT_BATCH_TOKENS;
        self.batch_max_tokens
            .unwrap_or(if backend == "gpu" { gpu } else { cpu })
    }

    /// Reads the inference variables over [`InferenceConfig::default`].
    /// Production does not download a model unless `INFERENCE_MODEL_FETCH=auto`
    /// asks for it: the image carries its model, and a production server should
    /// reach the network at startup only when told to. An explicit `auto` is
    /// honoured there (a machine deployed without the image).
    pub fn from_vars(vars: &Vars<'_>, env: AppEnv) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let default_wait_ms = u64::try_from(defaults.batch_max_wait.as_millis()).unwrap_or(0);
        let production = env == AppEnv::Production;
        let default_fetch = if production {
            ModelFetchMode::Never
        } else {
            defaults.model_fetch
        };
        Ok(Self {
            device: vars.parse("INFERENCE_DEVICE", defaults.device)?,
            precision: vars.parse("INFERENCE_PRECISION", defaults.precision)?,
            model_dir: vars.parse("INFERENCE_MODEL_DIR", defaults.model_dir)?,
            model_fetch: vars.parse("INFERENCE_MODEL_FETCH", default_fetch)?,
            model_fetch_timeout: Duration::from_secs(vars.positive(
                "INFERENCE_MODEL_FETCH_TIMEOUT_SECONDS",
                defaults.model_fetch_timeout.as_secs(),
            )?),
            batch_max_tokens: match vars.optional("INFERENCE_BATCH_MAX_TOKENS") {
                None => None,
                Some(_) => Some(vars.positive("INFERENCE_BATCH_MAX_TOKENS", 1)?),
            },
            batch_max_wait: Duration::from_millis(
                vars.parse("INFERENCE_BATCH_MAX_WAIT_MS", default_wait_ms)?,
            ),
            queue_capacity: vars.positive("INFERENCE_QUEUE_CAPACITY", defaults.queue_capacity)?,
            max_inputs: vars.positive("INFERENCE_MAX_INPUTS", defaults.max_inputs)?,
            max_request_tokens: vars
                .positive("INFERENCE_MAX_REQUEST_TOKENS", defaults.max_request_tokens)?,
            truncate: vars.parse("INFERENCE_TRUNCATE", defaults.truncate)?,
            tokens_per_minute: vars
                .parse("INFERENCE_TOKENS_PER_MINUTE", defaults.tokens_per_minute)?,
            tokenize_concurrency: vars.positive(
                "INFERENCE_TOKENIZE_CONCURRENCY",
                defaults.tokenize_concurrency,
            )?,
            tokenize_queue: vars.parse("INFERENCE_TOKENIZE_QUEUE", defaults.tokenize_queue)?,
            batch_job_max_texts: vars.positive(
                "INFERENCE_BATCH_JOB_MAX_TEXTS",
                defaults.batch_job_max_texts,
            )?,
            production,
        })
    }

    /// Most tokens one request may hold: the per-request cap, and never more
    /// than a whole minute's budget, so every request that passes this check
    /// can be admitted once the caller's bucket has refilled.
    pub fn request_token_cap(&self) -> usize {
        match usize::try_from(self.tokens_per_minute) {
            Ok(0) => self.max_request_tokens,
            Ok(budget) => self.max_request_tokens.min(budget),
            Err(_) => self.max_request_tokens,
        }
    }
}
