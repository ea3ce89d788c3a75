//! Inference: text embeddings computed in-process. The engine (`engine`) is a
//! library; this domain puts it behind the API: an OpenAI-compatible embeddings
//! route fed by a dynamic batcher, similarity, the model listing, and the
//! `embed_texts` execution kind for large jobs.

pub mod batch_kind;
pub mod batcher;
pub mod config;
pub mod engine;
pub mod input;
pub mod rate_limit;
pub mod repository;
pub mod router;
pub mod schemas;
pub mod service;
pub mod slots;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use serde_json::json;

use crate::core::platform::ReadinessReports;
use crate::inference::config::InferenceConfig;
use batcher::{Batcher, BatcherLimits};
use engine::{EmbeddingEngine, EngineError};
use rate_limit::TokenLimiter;
use slots::BlockingSlots;

/// The name the engine reports under in `/ready`.
const COMPONENT: &str = "inference";

/// Most users whose token buckets one replica keeps (about 64 bytes each);
/// past them a new user waits until a tracked one's bucket refills.
const MAX_TRACKED_USERS: usize = 100_000;

/// What clients are told in production when the model could not be loaded:
/// the reason names paths on the server, so it goes only to the log.
const UNAVAILABLE_IN_PRODUCTION: &str =
    "the embedding model could not be loaded; the server's log says why";

/// A loaded engine and the batcher that feeds it.
#[derive(Debug)]
pub struct LoadedEngine {
    /// The engine (for tokenizing and describing the model).
    pub engine: Arc<EmbeddingEngine>,
    /// Where embedding work is queued.
    pub batcher: Batcher,
    /// When the model finished loading (the models listing's `created`).
    pub loaded_at: SystemTime,
}

/// Where the engine stands: loading happens once, at startup, off the runtime.
#[derive(Debug, Clone)]
pub enum EngineStatus {
    /// The model is being read and uploaded.
    Loading,
    /// The engine answers.
    Ready(Arc<LoadedEngine>),
    /// The model could not be loaded; the service runs without inference.
    Unavailable(String),
}

/// The service's handle on the embedding engine, shared by every request and
/// every `embed_texts` run.
#[derive(Debug, Clone)]
pub struct InferenceState {
    status: Arc<RwLock<EngineStatus>>,
    /// The inference settings.
    pub config: Arc<InferenceConfig>,
    /// Per-user token limits.
    pub limiter: Arc<TokenLimiter>,
    /// Where requests are tokenized, a bounded number at once.
    pub tokenize_slots: Arc<BlockingSlots>,
}

impl InferenceState {
    /// A state that loads nothing: the engine is unavailable for `reason`. For
    /// processes that never embed (printing the OpenAPI document).
    pub fn disabled(config: InferenceConfig, reason: &str) -> Self {
        Self::with_status(config, EngineStatus::Unavailable(reason.to_owned()))
    }

    /// Starts loading the model in the background, so the service listens at once
    /// and a missing or broken model disables inference instead of stopping the
    /// process. Every change is reported to `components` for `/ready`.
    pub fn load_in_background(config: &InferenceConfig, components: Arc<ReadinessReports>) -> Self {
        let state = Self::with_status(config.clone(), EngineStatus::Loading);
        let mut report = json!({ "state": "loading", "model_dir": config.model_dir });
        state.redact(&mut report);
        components.report(COMPONENT, report);
        let loading = state.clone();
        tokio::task::spawn_blocking(move || {
            let config = &loading.config;
            let result = EmbeddingEngine::load(&config.model_dir, config.device);
            loading.settle(result, &components);
        });
        state
    }

    fn with_status(config: InferenceConfig, status: EngineStatus) -> Self {
        Self {
            status: Arc::new(RwLock::new(status)),
            limiter: Arc::new(TokenLimiter::new(
                config.tokens_per_minute,
                MAX_TRACKED_USERS,
            )),
            tokenize_slots: Arc::new(BlockingSlots::new(
                config.tokenize_concurrency,
                config.tokenize_queue,
            )),
            config: Arc::new(config),
        }
    }

    /// The engine's current status.
    pub fn status(&self) -> EngineStatus {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why inference is unavailable, as clients may be told it: the reason
    /// outside production, a stable sentence in production.
    pub fn unavailable_reason<'a>(&self, reason: &'a str) -> &'a str {
        if self.config.production {
            UNAVAILABLE_IN_PRODUCTION
        } else {
            reason
        }
    }

    /// Takes what names the server's files out of a `/ready` report in
    /// production: the model directory, and the reason loading failed.
    fn redact(&self, report: &mut serde_json::Value) {
        if !self.config.production {
            return;
        }
        if let Some(fields) = report.as_object_mut() {
            fields.remove("model_dir");
            if fields.contains_key("reason") {
                fields.insert("reason".to_owned(), UNAVAILABLE_IN_PRODUCTION.into());
            }
        }
    }

    /// The name clients use for the configured model: its directory's name.
    pub fn model_name(&self) -> String {
        engine::model_name(&self.config.model_dir)
    }

    fn settle(&self, result: Result<EmbeddingEngine, EngineError>, components: &ReadinessReports) {
        let started = result.and_then(|engine| {
            let limits = BatcherLimits {
                max_batch_tokens: self.config.batch_tokens_for(engine.backend_info().backend),
                max_wait: self.config.batch_max_wait,
                queue_capacity: self.config.queue_capacity,
            };
            let engine = Arc::new(engine);
            let batcher = Batcher::start(engine.clone(), limits).map_err(EngineError::Thread)?;
            Ok(LoadedEngine {
                engine,
                batcher,
                loaded_at: SystemTime::now(),
            })
        });
        let (status, mut report) = match started {
            Ok(runtime) => {
                let engine = &runtime.engine;
                let info = engine.backend_info();
                let report = json!({
                    "state": "ready",
                    "model": engine.model_name(),
                    "model_dir": engine.model_dir(),
                    "dimensions": engine.dimension(),
                    "max_tokens": engine.config().max_seq_length,
                    "backend": info.backend,
                    "adapter": info.adapter,
                    "api": info.api,
                    "device_type": info.device_type,
                });
                (EngineStatus::Ready(Arc::new(runtime)), report)
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(%reason, "embedding engine unavailable; run `task model-fetch` or set INFERENCE_MODEL_DIR");
                let report = json!({ "state": "unavailable", "reason": reason });
                (EngineStatus::Unavailable(reason), report)
            }
        };
        *self.status.write().unwrap_or_else(PoisonError::into_inner) = status;
        self.redact(&mut report);
        components.report(COMPONENT, report);
    }
}
