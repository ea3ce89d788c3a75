//! The inference use cases: embeddings (OpenAI-compatible), similarity and the
//! model listing. Handlers parse HTTP; this module checks inputs, tokenizes off
//! the async runtime, and hands token sequences to the batcher.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;

use crate::inference::batch_kind::names_model;
use crate::inference::batcher::{BatchError, BatchOutput};
use crate::inference::engine::{EngineError, Pooling};
use crate::inference::schemas::{
    EmbeddingData, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat,
    ModelCard, ModelList, SimilarityRequest, SimilarityResponse, Usage,
};
use crate::inference::{EngineStatus, InferenceState, LoadedEngine};
use crate::shared::error::{AppError, FieldError, LocSegment};
use crate::users::models::User;

/// One input as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text, to be tokenized.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

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
    let inputs = match parse_input(&request.input, state.config.max_inputs, vocab(&runtime)) {
        Ok(inputs) => inputs,
        Err(mut input_errors) => {
            errors.append(&mut input_errors);
            Vec::new()
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
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
    let mut errors = Vec::new();
    if request.source.is_empty() {
        errors.push(field(&["source"], "must not be empty"));
    }
    if request.targets.is_empty() {
        errors.push(field(&["targets"], "must hold at least one text"));
    } else if request.targets.len() >= state.config.max_inputs {
        errors.push(field(
            &["targets"],
            &format!("may hold at most {} texts", state.config.max_inputs - 1),
        ));
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
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    check_rate_limit(state, user)?;
    let truncate = request.truncate.unwrap_or(state.config.truncate);
    let inputs = std::iter::once(request.source)
        .chain(request.targets)
        .map(Input::Text)
        .collect();
    // Index 0 is the source and the rest are targets, so errors are located there.
    let locate = |index: usize| -> Vec<LocSegment> {
        match index {
            0 => vec!["body".into(), "source".into()],
            _ => vec![
                "body".into(),
                "targets".into(),
                LocSegment::Index(index - 1),
            ],
        }
    };
    let embedded = embed(&runtime, inputs, truncate, &locate).await?;
    let (source, targets) = embedded
        .vectors
        .split_first()
        .ok_or_else(|| AppError::internal("no source vector"))?;
    let scores = targets
        .iter()
        .map(|target| source.iter().zip(target).map(|(a, b)| a * b).sum::<f32>())
        .collect();
    let response = SimilarityResponse {
        scores,
        model: runtime.engine.model_name(),
        usage: Usage::of(embedded.token_counts.iter().sum()),
    };
    Ok((response, embedded.timing))
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
    locate: &(dyn Fn(usize) -> Vec<LocSegment> + Sync),
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

/// Token ids of every input, cut to the model's length or refused (422 naming
/// each input that is too long).
async fn tokenize(
    runtime: &Arc<LoadedEngine>,
    inputs: Vec<Input>,
    truncate: bool,
    locate: &(dyn Fn(usize) -> Vec<LocSegment> + Sync),
) -> Result<Vec<Vec<u32>>, AppError> {
    let engine = runtime.engine.clone();
    let max_tokens = engine.config().max_seq_length;
    let tokenized = tokio::task::spawn_blocking(move || -> Result<Vec<(Vec<u32>, bool)>, _> {
        let texts: Vec<&str> = inputs
            .iter()
            .filter_map(|input| match input {
                Input::Text(text) => Some(text.as_str()),
                Input::Tokens(_) => None,
            })
            .collect();
        let mut texts = engine.tokenize_marking_truncation(&texts)?.into_iter();
        Ok(inputs
            .into_iter()
            .map(|input| match input {
                Input::Text(_) => texts.next().map_or((Vec::new(), false), |tokenized| {
                    (tokenized.ids, tokenized.truncated)
                }),
                Input::Tokens(mut ids) => {
                    let too_long = ids.len() > max_tokens;
                    ids.truncate(max_tokens);
                    (ids, too_long)
                }
            })
            .collect())
    })
    .await
    .map_err(AppError::internal)?
    .map_err(|error: EngineError| AppError::internal(error))?;
    let errors: Vec<FieldError> = tokenized
        .iter()
        .enumerate()
        .filter(|(_, (_, cut))| *cut && !truncate)
        .map(|(index, _)| {
            FieldError::new(
                locate(index),
                format!(
                    "is longer than the {max_tokens} tokens this model reads; shorten it or \
                     send \"truncate\": true to cut it"
                ),
                "too_long",
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    Ok(tokenized.into_iter().map(|(ids, _)| ids).collect())
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

fn vocab(runtime: &LoadedEngine) -> usize {
    runtime.engine.config().bert.vocab_size
}

fn field(path: &[&str], message: &str) -> FieldError {
    let loc = std::iter::once("body")
        .chain(path.iter().copied())
        .map(LocSegment::from)
        .collect();
    FieldError::new(loc, message, "value_error")
}

/// Locates input `index` of an embeddings request (`input` itself when it was one string).
fn input_loc(single: bool) -> impl Fn(usize) -> Vec<LocSegment> + Sync {
    move |index| {
        let mut loc = vec![LocSegment::from("body"), LocSegment::from("input")];
        if !single {
            loc.push(LocSegment::Index(index));
        }
        loc
    }
}

/// Reads OpenAI's `input`: a string, an array of strings, an array of token ids,
/// or an array of arrays of token ids, naming every element that is wrong.
pub fn parse_input(
    value: &Value,
    max_inputs: usize,
    vocab: usize,
) -> Result<Vec<Input>, Vec<FieldError>> {
    let at = input_error;
    let items = match value {
        Value::String(text) if text.is_empty() => {
            return Err(vec![at(&[], "must not be empty".into())]);
        }
        Value::String(text) => return Ok(vec![Input::Text(text.clone())]),
        Value::Array(items) => items,
        _ => {
            return Err(vec![at(
                &[],
                "must be a string, an array of strings, an array of token ids or an array of \
                 arrays of token ids"
                    .into(),
            )]);
        }
    };
    if items.is_empty() {
        return Err(vec![at(&[], "must not be empty".into())]);
    }
    if items.iter().all(Value::is_number) {
        return token_ids(items, vocab, &[]).map(|ids| vec![Input::Tokens(ids)]);
    }
    if items.len() > max_inputs {
        return Err(vec![at(
            &[],
            format!(
                "holds {} inputs; at most {max_inputs} are allowed",
                items.len()
            ),
        )]);
    }
    let mut inputs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let here = [LocSegment::Index(index)];
        match item {
            Value::String(text) if text.is_empty() => {
                errors.push(at(&here, "must not be empty".into()));
            }
            Value::String(text) => inputs.push(Input::Text(text.clone())),
            Value::Array(ids) if ids.is_empty() => {
                errors.push(at(&here, "must not be empty".into()));
            }
            Value::Array(ids) => match token_ids(ids, vocab, &here) {
                Ok(ids) => inputs.push(Input::Tokens(ids)),
                Err(bad) => errors.extend(bad),
            },
            _ => errors.push(at(
                &here,
                "must be a string or an array of token ids".into(),
            )),
        }
    }
    let kinds_mixed = inputs.windows(2).any(|pair| {
        matches!(
            pair,
            [Input::Text(_), Input::Tokens(_)] | [Input::Tokens(_), Input::Text(_)]
        )
    });
    if kinds_mixed {
        errors.push(at(
            &[],
            "must hold only strings or only token arrays, not both".into(),
        ));
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors)
    }
}

/// A 422 entry at `body.input` followed by `path`.
fn input_error(path: &[LocSegment], message: String) -> FieldError {
    let mut loc = vec![LocSegment::from("body"), LocSegment::from("input")];
    loc.extend_from_slice(path);
    FieldError::new(loc, message, "value_error")
}

/// Token ids from JSON numbers, each an integer inside the vocabulary.
fn token_ids(
    items: &[Value],
    vocab: usize,
    prefix: &[LocSegment],
) -> Result<Vec<u32>, Vec<FieldError>> {
    let mut ids = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item.as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) if (id as usize) < vocab => ids.push(id),
            _ => {
                let mut path = prefix.to_vec();
                path.push(LocSegment::Index(index));
                errors.push(input_error(
                    &path,
                    format!("must be a token id from 0 to {}", vocab.saturating_sub(1)),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(errors)
    }
}
