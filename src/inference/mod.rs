//! Inference: AI features computed in-process. The text-embedding engine
//! (`engine`) is a library; [`InferenceState`] is how the service holds it.

pub mod engine;

use std::sync::{Arc, PoisonError, RwLock};

use serde_json::json;

use crate::core::config::InferenceConfig;
use crate::core::platform::Components;
use engine::{EmbeddingEngine, EngineError};

/// The name the engine reports under in `/ready`.
const COMPONENT: &str = "inference";

/// Where the engine stands: loading happens once, at startup, off the runtime.
#[derive(Debug, Clone)]
pub enum EngineStatus {
    /// The model is being read and uploaded.
    Loading,
    /// The engine answers.
    Ready(Arc<EmbeddingEngine>),
    /// The model could not be loaded; the service runs without inference.
    Unavailable(String),
}

/// The service's handle on the embedding engine, shared by every request.
#[derive(Debug, Clone)]
pub struct InferenceState {
    status: Arc<RwLock<EngineStatus>>,
}

impl InferenceState {
    /// Starts loading the model in the background, so the service listens at once
    /// and a missing or broken model disables inference instead of stopping the
    /// process. Every change is reported to `components` for `/ready`.
    pub fn load_in_background(config: &InferenceConfig, components: Arc<Components>) -> Self {
        let state = Self {
            status: Arc::new(RwLock::new(EngineStatus::Loading)),
        };
        components.report(
            COMPONENT,
            json!({ "state": "loading", "model_dir": config.model_dir }),
        );
        let (config, loading) = (config.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            let result = EmbeddingEngine::load(&config.model_dir, config.device);
            loading.finish(result, &components);
        });
        state
    }

    /// The engine's current status.
    pub fn status(&self) -> EngineStatus {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn finish(&self, result: Result<EmbeddingEngine, EngineError>, components: &Components) {
        let (status, report) = match result {
            Ok(engine) => {
                let info = engine.backend_info();
                let report = json!({
                    "state": "ready",
                    "model_dir": engine.model_dir(),
                    "dimensions": engine.dimension(),
                    "max_tokens": engine.config().max_seq_length,
                    "backend": info.backend,
                    "adapter": info.adapter,
                    "api": info.api,
                    "device_type": info.device_type,
                });
                (EngineStatus::Ready(Arc::new(engine)), report)
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(%reason, "embedding engine unavailable; run `task model-fetch` or set INFERENCE_MODEL_DIR");
                let report = json!({ "state": "unavailable", "reason": reason });
                (EngineStatus::Unavailable(reason), report)
            }
        };
        *self.status.write().unwrap_or_else(PoisonError::into_inner) = status;
        components.report(COMPONENT, report);
    }
}
