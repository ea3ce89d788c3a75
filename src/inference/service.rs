//! The inference use cases: embeddings (OpenAI-compatible), similarity and the
//! model listing. Handlers parse HTTP; this module orchestrates: it checks the
//! request, has `input` turn its inputs into token sequences, hands those to
//! the batcher and shapes the answer.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;

use crate::inference::batch_kind::names_model;
use crate::inference::batcher::{BatchError, BatchOutput};
use crate::inference::engine::Pooling;
use crate::inference::input::{Input, Locate, input_loc, parse_input, tokenize};
use crate::inference::schemas::{
    EmbeddingData, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat,
    ModelCard, ModelList, SimilarityRequest, SimilarityResponse, Usage,
};
use crate::inference::{EngineStatus, InferenceState, LoadedEngine};
use crate::shared::error::{AppError, FieldError, LocSegment};
use crate::users::models::User;

/// Where a request's time went, for the timing headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Turning texts into token ids.
    pub tokenization: Duration,
    /// Waiting for a batch.
    pub queue: Duration,
    /// The engine call the request was part of.
    pub inference: Duration,
}

/// Vectors of a list of inputs, with their token counts and timing.
#[derive(Debug)]
pub struct Embedded {
    /// One unit vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model read per input.
    pub token_counts: Vec<usize>,
    /// Where the time went.
    pub timing: Timing,
}

/// The loaded engine, or 503 saying why there is none.
pub fn runtime(state: &InferenceState) -> Result<Arc<LoadedEngine>, AppError> {
    match state.status() {
        EngineStatus::Ready(runtime) => Ok(runtime),
        EngineStatus::Loading => Err(AppError::Unavailable {
            code: "inference_loading",
            detail: "The embedding model is still loading; try again in a moment.".to_owned(),
            retry_after: Some(Duration::from_secs(1)),
        }),
        EngineStatus::Unavailable(reason) => Err(AppError::Unavailable {
            code: "inference_unavailable",
            detail: format!("Inference is not available on this server: {reason}."),
            retry_after: None,
        }),
    }
}

/// Counts a request against the caller's per-minute limit.
pub fn check_rate_limit(state: &InferenceState, user: &User) -> Result<(), AppError> {
    state.limiter.check(user.id).map_err(|wait| {
        metrics::counter!("inference_rejections_total", "reason" => "rate_limited").increment(1);
        AppError::RateLimited {
            detail: format!(
                "More than {} inference requests a minute; try again in {} s.",
                state.config.rate_limit_per_minute,
                wait.as_secs() + 1
            ),
            retry_after: wait,
        }
    })
}

/// `POST /inference/embeddings`.
pub async fn embeddings(
    state: &InferenceState,
    user: &User,
    request: EmbeddingsRequest,
) -> Result<(EmbeddingsResponse, Timing), AppError> {
    let runtime = runtime(state)?;
    check_model(&runtime, &request.model)?;
    let inputs = checked_embeddings_inputs(state, &runtime, &request)?;
    check_rate_limit(state, user)?;
    let single = request.input.is_string();
    let truncate = request.truncate.unwrap_or(state.config.truncate);
    let embedded = embed(&runtime, inputs, truncate, &input_loc(single)).await?;
    let tokens = embedded.token_counts.iter().sum();
    let data = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| embedding_data(index, vector, request.encoding_format))
        .collect();
    let response = EmbeddingsResponse {
        object: "list",
        data,
        model: runtime.engine.model_name(),
        usage: Usage::of(tokens),
    };
    Ok((response, embedded.timing))
}

/// The parsed inputs of an embeddings request, or one 422 listing every bad
/// field (`dimensions` and each bad element of `input` together).
fn checked_embeddings_inputs(
    state: &InferenceState,
    runtime: &LoadedEngine,
    request: &EmbeddingsRequest,
) -> Result<Vec<Input>, AppError> {
    let mut errors = Vec::new();
    if let Some(dimensions) = request.dimensions {
        let native = runtime.engine.dimension();
        if dimensions as usize != native {
            errors.push(FieldError::body("dimensions").because(format!(
                "this model produces {native}-dimensional vectors and cannot shorten them; \
                     omit `dimensions` or send {native}"
            )));
        }
    }
    let inputs = match parse_input(&request.input, state.config.max_inputs, vocab(runtime)) {
        Ok(inputs) => inputs,
        Err(mut input_errors) => {
            errors.append(&mut input_errors);
            Vec::new()
        }
    };
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(AppError::Validation(errors))
    }
}

/// `POST /inference/similarity`.
pub async fn similarity(
    state: &InferenceState,
    user: &User,
    request: SimilarityRequest,
) -> Result<(SimilarityResponse, Timing), AppError> {
    let runtime = runtime(state)?;
    if let Some(model) = &request.model {
        check_model(&runtime, model)?;
    }
    let errors = similarity_errors(&request, state.config.max_inputs);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    check_rate_limit(state, user)?;
    let truncate = request.truncate.unwrap_or(state.config.truncate);
    let inputs = std::iter::once(request.source)
        .chain(request.targets)
        .map(Input::Text)
        .collect();
    let embedded = embed(&runtime, inputs, truncate, &similarity_loc).await?;
    let (source, targets) = embedded
        .vectors
        .split_first()
        .ok_or_else(|| AppError::internal("no source vector"))?;
    let response = SimilarityResponse {
        scores: cosine_scores(source, targets),
        model: runtime.engine.model_name(),
        usage: Usage::of(embedded.token_counts.iter().sum()),
    };
    Ok((response, embedded.timing))
}

/// Every bad field of a similarity request: an empty source, no targets or
/// too many (the source takes one of `max_inputs`), each empty target.
fn similarity_errors(request: &SimilarityRequest, max_inputs: usize) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if request.source.is_empty() {
        errors.push(FieldError::body("source").because("must not be empty"));
    }
    if request.targets.is_empty() {
        errors.push(FieldError::body("targets").because("must hold at least one text"));
    } else if request.targets.len() >= max_inputs {
        errors.push(
            FieldError::body("targets")
                .because(format!("may hold at most {} texts", max_inputs - 1)),
        );
    }
    for (index, target) in request.targets.iter().enumerate() {
        if target.is_empty() {
            errors.push(
                FieldError::body("targets")
                    .at(index)
                    .because("must not be empty"),
            );
        }
    }
    errors
}

/// Locates input `index` of a similarity request: 0 is the source, the rest
/// are targets.
fn similarity_loc(index: usize) -> Vec<LocSegment> {
    match index {
        0 => vec!["body".into(), "source".into()],
        _ => vec![
            "body".into(),
            "targets".into(),
            LocSegment::Index(index - 1),
        ],
    }
}

/// The cosine similarity of `source` with each target (the vectors are unit
/// vectors, so it is their dot product).
fn cosine_scores(source: &[f32], targets: &[Vec<f32>]) -> Vec<f32> {
    targets
        .iter()
        .map(|target| source.iter().zip(target).map(|(a, b)| a * b).sum::<f32>())
        .collect()
}

/// `GET /inference/models`.
pub fn models(state: &InferenceState) -> Result<ModelList, AppError> {
    let runtime = runtime(state)?;
    let engine = &runtime.engine;
    let info = engine.backend_info();
    let card = ModelCard {
        id: engine.model_name(),
        object: "model",
        created: runtime
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        owned_by: "tessera",
        dimensions: engine.dimension(),
        max_tokens: engine.config().max_seq_length,
        pooling: match engine.config().pooling {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        },
        backend: info.backend,
        adapter: info.adapter,
        api: info.api,
        device_type: info.device_type,
    };
    Ok(ModelList {
        object: "list",
        data: vec![card],
    })
}

/// Tokenizes `inputs` (off the async runtime), applies the truncation rule and
/// embeds them through the batcher. `locate` names an input in error messages.
pub async fn embed(
    runtime: &Arc<LoadedEngine>,
    inputs: Vec<Input>,
    truncate: bool,
    locate: Locate<'_>,
) -> Result<Embedded, AppError> {
    let started = Instant::now();
    let sequences = tokenize(runtime, inputs, truncate, locate).await?;
    let tokenization = started.elapsed();
    let token_counts: Vec<usize> = sequences.iter().map(Vec::len).collect();
    let BatchOutput {
        vectors,
        queue_time,
        inference_time,
    } = runtime
        .batcher
        .embed(sequences)
        .await
        .map_err(batch_error)?;
    Ok(Embedded {
        vectors,
        token_counts,
        timing: Timing {
            tokenization,
            queue: queue_time,
            inference: inference_time,
        },
    })
}

/// The batcher's failures as the API answers them.
pub fn batch_error(error: BatchError) -> AppError {
    match error {
        BatchError::QueueFull => AppError::Unavailable {
            code: "inference_overloaded",
            detail: "The inference queue is full; try again shortly.".to_owned(),
            retry_after: Some(Duration::from_secs(1)),
        },
        BatchError::Stopped => AppError::Unavailable {
            code: "inference_unavailable",
            detail: "The inference engine has stopped.".to_owned(),
            retry_after: None,
        },
        error @ (BatchError::Engine(_) | BatchError::Panicked) => AppError::internal(error),
    }
}

/// 404 unless `requested` names the loaded model (by its name or its Hugging Face id).
pub fn check_model(runtime: &LoadedEngine, requested: &str) -> Result<(), AppError> {
    let name = runtime.engine.model_name();
    if names_model(requested, &name) {
        Ok(())
    } else {
        Err(AppError::NotFound(format!(
            "The model {requested:?} does not exist here; the loaded model is {name:?}."
        )))
    }
}

/// One response entry in the requested encoding.
pub fn embedding_data(index: usize, vector: Vec<f32>, format: EncodingFormat) -> EmbeddingData {
    let embedding = match format {
        EncodingFormat::Float => EmbeddingVector::Float(vector),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect();
            EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    };
    EmbeddingData {
        object: "embedding",
        index,
        embedding,
    }
}

/// The size of the loaded model's vocabulary: token ids must be below it.
fn vocab(runtime: &LoadedEngine) -> usize {
    runtime.engine.config().bert.vocab_size
}
