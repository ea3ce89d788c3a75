//! The inference use cases: embeddings (OpenAI-compatible), similarity and the
//! model listing. Handlers parse HTTP; this module orchestrates admission, each
//! step before the work the next needs: the caller's token budget is not empty,
//! the inputs are within their counts and lengths (`input`), their most
//! possible tokens are reserved, they are tokenized (a bounded number of
//! requests at once), held to the per-request token cap, embedded by the
//! batcher on the caller's turn, and the reservation settles to the exact count.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use uuid::Uuid;

use crate::inference::batch_kind::names_model;
use crate::inference::batcher::{BatchError, BatchOutput};
use crate::inference::engine::Pooling;
use crate::inference::input::{
    Counted, Input, InputLimits, Locate, input_loc, parse_input, parse_texts, text_input,
    token_bound, tokenize, tokenize_counting, too_long, whole_text_token_bound,
};
use crate::inference::rate_limit::{Refusal, Reservation};
use crate::inference::schemas::{
    EmbeddingData, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat,
    MAX_MODEL_NAME_CHARS, ModelCard, ModelList, SimilarityRequest, SimilarityResponse,
    TokenizeRequest, TokenizeResponse, TokenizedText, Usage,
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
        EngineStatus::Downloading => Err(AppError::Unavailable {
            code: "inference_loading",
            detail: "The embedding model is still downloading; try again in a minute.".to_owned(),
            retry_after: Some(Duration::from_secs(10)),
        }),
        EngineStatus::Loading => Err(AppError::Unavailable {
            code: "inference_loading",
            detail: "The embedding model is still loading; try again in a moment.".to_owned(),
            retry_after: Some(Duration::from_secs(1)),
        }),
        EngineStatus::Unavailable(reason) => Err(AppError::Unavailable {
            code: "inference_unavailable",
            detail: format!(
                "Inference is not available on this server: {}.",
                state.unavailable_reason(&reason)
            ),
            retry_after: None,
        }),
    }
}

/// 429 unless `user` has tokens left this minute: checked before any
/// validation work, so a limited caller costs nothing however bad its body.
pub fn check_rate_limit(state: &InferenceState, user: Uuid) -> Result<(), AppError> {
    state
        .limiter
        .check(user)
        .map_err(|refusal| refused(state, refusal))
}

/// Holds `tokens` of `user`'s budget until the request knows its exact count
/// (429 when the bucket lacks them).
pub fn reserve(state: &InferenceState, user: Uuid, tokens: usize) -> Result<Reservation, AppError> {
    state
        .limiter
        .reserve(user, tokens)
        .map_err(|refusal| refused(state, refusal))
}

/// A limiter's refusal as the API answers it.
fn refused(state: &InferenceState, refusal: Refusal) -> AppError {
    match refusal {
        Refusal::Exhausted { wait } => {
            metrics::counter!("inference_rejections_total", "reason" => "rate_limited")
                .increment(1);
            AppError::RateLimited {
                detail: format!(
                    "Over the limit of {} inference tokens a minute; try again in {} s.",
                    state.limiter.per_minute(),
                    wait.as_secs() + 1
                ),
                retry_after: wait,
            }
        }
        Refusal::Crowded => {
            metrics::counter!("inference_rejections_total", "reason" => "limiter_full")
                .increment(1);
            AppError::Unavailable {
                code: "inference_overloaded",
                detail: "Too many users are embedding on this server at once; try again shortly."
                    .to_owned(),
                retry_after: Some(Duration::from_secs(1)),
            }
        }
    }
}

/// The bounds a request's inputs are checked against.
pub fn input_limits(state: &InferenceState, runtime: &LoadedEngine, truncate: bool) -> InputLimits {
    InputLimits {
        max_inputs: state.config.max_inputs,
        max_tokens: runtime.engine.config().max_seq_length,
        vocab: runtime.engine.config().bert.vocab_size,
        truncate,
    }
}

/// What one call to [`embed`] embeds.
pub struct Work<'a> {
    /// The inputs, already bounded ([`crate::inference::input`]).
    pub inputs: Vec<Input>,
    /// Cut over-long inputs instead of refusing them.
    pub truncate: bool,
    /// Names an input in error messages.
    pub locate: Locate<'a>,
    /// Most tokens the inputs may hold together (a request's cap); `None` for
    /// work already bounded otherwise (an `embed_texts` chunk).
    pub max_total_tokens: Option<usize>,
}

/// `POST /inference/embeddings`.
pub async fn embeddings(
    state: &InferenceState,
    user: &User,
    request: EmbeddingsRequest,
) -> Result<(EmbeddingsResponse, Timing), AppError> {
    let runtime = runtime(state)?;
    check_rate_limit(state, user.id)?;
    let truncate = request.truncate.unwrap_or(state.config.truncate);
    let limits = input_limits(state, &runtime, truncate);
    let inputs = checked_embeddings_inputs(&runtime, &request, &limits)?;
    let reservation = admit(state, user.id, &inputs, &limits)?;
    let work = Work {
        inputs,
        truncate,
        locate: &input_loc(request.input.is_string()),
        max_total_tokens: Some(state.config.request_token_cap()),
    };
    let embedded = embed(state, &runtime, reservation, work).await?;
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
/// field (`model`'s length, `dimensions` and each bad element of `input`
/// together), or a 404 for a well-formed name of another model.
fn checked_embeddings_inputs(
    runtime: &LoadedEngine,
    request: &EmbeddingsRequest,
    limits: &InputLimits,
) -> Result<Vec<Input>, AppError> {
    let mut errors = Vec::new();
    match model_name_error(&request.model) {
        Some(error) => errors.push(error),
        None => check_model(runtime, &request.model)?,
    }
    if let Some(dimensions) = request.dimensions {
        let native = runtime.engine.dimension();
        if dimensions as usize != native {
            errors.push(FieldError::body("dimensions").because(format!(
                "this model produces {native}-dimensional vectors and cannot shorten them; \
                     omit `dimensions` or send {native}"
            )));
        }
    }
    let inputs = match parse_input(&request.input, limits) {
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

/// Admits a request's inputs: a 422 up front when they are token ids over the
/// per-request cap (their count is exact), else a reservation of the most
/// tokens they can cost (never more than the cap, which they are held to
/// once tokenized).
fn admit(
    state: &InferenceState,
    user: Uuid,
    inputs: &[Input],
    limits: &InputLimits,
) -> Result<Reservation, AppError> {
    let bound: usize = inputs
        .iter()
        .map(|input| token_bound(input, limits.max_tokens))
        .sum();
    let cap = state.config.request_token_cap();
    let exact = inputs.iter().all(|input| matches!(input, Input::Tokens(_)));
    if exact && bound > cap {
        return Err(AppError::Validation(vec![too_many_tokens(bound, cap)]));
    }
    reserve(state, user, bound.min(cap))
}

/// The 422 entry for a request holding more tokens than one request may.
fn too_many_tokens(tokens: usize, cap: usize) -> FieldError {
    FieldError::part("body")
        .kind("too_many_tokens")
        .because(format!(
            "the inputs hold {tokens} tokens together; one request may hold at most {cap}"
        ))
}

/// `POST /inference/similarity`.
pub async fn similarity(
    state: &InferenceState,
    user: &User,
    request: SimilarityRequest,
) -> Result<(SimilarityResponse, Timing), AppError> {
    let runtime = runtime(state)?;
    check_rate_limit(state, user.id)?;
    check_optional_model(&runtime, request.model.as_deref())?;
    let truncate = request.truncate.unwrap_or(state.config.truncate);
    let limits = input_limits(state, &runtime, truncate);
    let inputs = similarity_inputs(&request, &limits).map_err(AppError::Validation)?;
    let reservation = admit(state, user.id, &inputs, &limits)?;
    let work = Work {
        inputs,
        truncate,
        locate: &similarity_loc,
        max_total_tokens: Some(state.config.request_token_cap()),
    };
    let embedded = embed(state, &runtime, reservation, work).await?;
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

/// The source and targets of a similarity request as bounded inputs, or every
/// bad field: the count of targets first (too many is the only error then,
/// however many are empty), then each text.
fn similarity_inputs(
    request: &SimilarityRequest,
    limits: &InputLimits,
) -> Result<Vec<Input>, Vec<FieldError>> {
    let max_targets = limits.max_inputs.saturating_sub(1);
    if request.targets.len() > max_targets {
        return Err(vec![
            FieldError::body("targets").because(format!("may hold at most {max_targets} texts")),
        ]);
    }
    let mut errors = Vec::new();
    if request.targets.is_empty() {
        errors.push(FieldError::body("targets").because("must hold at least one text"));
    }
    let texts = std::iter::once((&request.source, FieldError::body("source"))).chain(
        request
            .targets
            .iter()
            .enumerate()
            .map(|(index, target)| (target, FieldError::body("targets").at(index))),
    );
    let mut inputs = Vec::with_capacity(request.targets.len() + 1);
    for (text, here) in texts {
        let input = if text.is_empty() {
            Err(here.because("must not be empty"))
        } else {
            text_input(text, limits, here)
        };
        match input {
            Ok(input) => inputs.push(input),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors)
    }
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
        vocab_size: engine.config().bert.vocab_size,
        max_tokens: engine.config().max_seq_length,
        pooling: match engine.config().pooling {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        },
        backend: info.backend,
        adapter: info.adapter,
        api: info.api,
        device_type: info.device_type,
        precision: info.precision,
    };
    Ok(ModelList {
        object: "list",
        data: vec![card],
    })
}

/// Tokenizes `work`'s inputs (off the async runtime, a bounded number of
/// requests at once), applies the length rules and embeds them through the
/// batcher on the reservation's owner's turn. The reservation is settled to the
/// tokens read once tokenized (also when the inputs are then refused as too
/// long: that work was done); a request the server fails gives it back.
pub async fn embed(
    state: &InferenceState,
    runtime: &Arc<LoadedEngine>,
    reservation: Reservation,
    work: Work<'_>,
) -> Result<Embedded, AppError> {
    let started = Instant::now();
    let sequences = tokenize(&state.tokenize_slots, runtime, work.inputs).await?;
    let tokenization = started.elapsed();
    let token_counts: Vec<usize> = sequences
        .iter()
        .map(|sequence| sequence.ids.len())
        .collect();
    let used = token_counts.iter().sum();
    let max_tokens = runtime.engine.config().max_seq_length;
    let mut errors = if work.truncate {
        Vec::new()
    } else {
        too_long(&sequences, max_tokens, work.locate)
    };
    if let Some(cap) = work.max_total_tokens.filter(|cap| used > *cap) {
        errors.push(too_many_tokens(used, cap));
    }
    if !errors.is_empty() {
        reservation.settle(used);
        return Err(AppError::Validation(errors));
    }
    let ids = sequences.into_iter().map(|sequence| sequence.ids).collect();
    let BatchOutput {
        vectors,
        queue_time,
        inference_time,
    } = runtime
        .batcher
        .embed(reservation.user(), ids)
        .await
        .map_err(batch_error)?;
    reservation.settle(used);
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
        error @ (BatchError::Engine(_) | BatchError::Panicked | BatchError::Incomplete { .. }) => {
            AppError::internal(error)
        }
    }
}

/// `POST /inference/tokenize`: each text's token ids as the model reads them,
/// with its whole length, admitted like embeddings (the same token budget,
/// input count, byte bound and per-request cap) and tokenized in the same
/// bounded slots. Every token tokenized is charged, as embeddings charge the
/// tokens they read: tokenizing is far cheaper than embedding, but a minute's
/// budget is then at most a few seconds of one core per user, and counting
/// long texts cannot be used to get around the budget.
pub async fn tokenize_texts(
    state: &InferenceState,
    user: &User,
    request: TokenizeRequest,
) -> Result<(TokenizeResponse, Duration), AppError> {
    let runtime = runtime(state)?;
    check_rate_limit(state, user.id)?;
    check_optional_model(&runtime, request.model.as_deref())?;
    let limits = input_limits(state, &runtime, true);
    let texts = parse_texts(&request.input, &limits).map_err(AppError::Validation)?;
    let bound: usize = texts
        .iter()
        .map(|text| whole_text_token_bound(text.text.len()))
        .sum();
    let cap = state.config.request_token_cap();
    let reservation = reserve(state, user.id, bound.min(cap))?;
    let wholes: Vec<bool> = texts.iter().map(|text| text.whole).collect();
    let texts = texts.into_iter().map(|text| text.text).collect();
    let started = Instant::now();
    let counted = tokenize_counting(&state.tokenize_slots, &runtime, texts).await?;
    let took = started.elapsed();
    let used: usize = counted.iter().map(|text| text.whole_len).sum();
    reservation.settle(used);
    if used > cap {
        return Err(AppError::Validation(vec![too_many_tokens(used, cap)]));
    }
    let data = counted
        .into_iter()
        .zip(wholes)
        .enumerate()
        .map(|(index, (text, whole))| tokenized_text(index, text, whole))
        .collect();
    let response = TokenizeResponse {
        object: "list",
        data,
        model: runtime.engine.model_name(),
        max_tokens: runtime.engine.config().max_seq_length,
        usage: Usage::of(used),
    };
    Ok((response, took))
}

/// One text's entry in a tokenize answer; `whole` says whether the text was
/// tokenized whole, so that its original length is known.
fn tokenized_text(index: usize, text: Counted, whole: bool) -> TokenizedText {
    TokenizedText {
        index,
        tokens: text.sequence.ids.len(),
        truncated: text.sequence.cut || !whole,
        original_tokens: whole.then_some(text.whole_len),
        ids: text.sequence.ids,
    }
}

/// The 422 entry for a `model` name outside its bounds (empty, or longer than
/// any model's name), so that a 404 never quotes a huge name.
fn model_name_error(requested: &str) -> Option<FieldError> {
    let chars = requested.chars().count();
    if chars == 0 {
        Some(FieldError::body("model").because("must not be empty"))
    } else if chars > MAX_MODEL_NAME_CHARS {
        Some(FieldError::body("model").kind("too_long").because(format!(
            "is {chars} characters; a model's name is at most {MAX_MODEL_NAME_CHARS}"
        )))
    } else {
        None
    }
}

/// Checks a `model` that may be left out (the loaded model then): a 422 for a
/// name outside its bounds, a 404 for another model's.
fn check_optional_model(runtime: &LoadedEngine, requested: Option<&str>) -> Result<(), AppError> {
    let Some(requested) = requested else {
        return Ok(());
    };
    if let Some(error) = model_name_error(requested) {
        return Err(AppError::Validation(vec![error]));
    }
    check_model(runtime, requested)
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
