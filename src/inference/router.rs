//! `/api/v1/inference`: OpenAI-compatible embeddings, similarity, tokenizing,
//! the model listing, and the result pages of `embed_texts` executions. Every
//! route needs an access token, which OpenAI's clients send as their API key,
//! and every error also carries OpenAI's `error` member, which their SDKs show.

use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::extract::{InferenceScope, ScopedUser};
use crate::auth::service::AuthState;
use crate::core::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::core::platform::Platform;
use crate::inference::schemas::{
    BatchResultsPage, BatchResultsQuery, EmbeddingsRequest, EmbeddingsResponse, ModelList,
    SimilarityRequest, SimilarityResponse, TokenizeRequest, TokenizeResponse,
};
use crate::inference::service::{self, Timing};
use crate::inference::{InferenceState, batch_kind};
use crate::shared::error::{AppError, Problem};

/// The OpenAPI tag of these routes.
pub const TAG: &str = "inference";

/// Where OpenAI's clients are pointed (`base_url`): every error under it
/// also carries OpenAI's `error` member besides the problem's own fields,
/// since OpenAI's SDKs build their exceptions' message, `type`, `param` and
/// `code` from it (and show only the status without it).
pub const OPENAI_BASE_PATH: &str = "/api/v1/inference/";

/// The inference routes.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
    AuthState: FromRef<S>,
    InferenceState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(create_embeddings))
        .routes(routes!(list_models))
        .routes(routes!(compare_similarity))
        .routes(routes!(batch_results))
        .routes(routes!(tokenize))
}

/// Embed texts (OpenAI's embeddings API).
///
/// Point an OpenAI client's `base_url` at `/api/v1/inference` and use an access token as the key.
#[utoipa::path(post, path = "/inference/embeddings", tag = TAG, operation_id = "inference-create-embeddings",
    request_body = EmbeddingsRequest,
    security(("bearer" = []), ("api_key" = ["inference"])),
    responses(
        (status = 200, description = "One vector per input, in order. `x-queue-time-ms`, `x-inference-time-ms` and `x-tokenization-time-ms` say where the time went.", body = EmbeddingsResponse),
        (status = 404, description = "Unknown model.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty, malformed or over-long input (more inputs, tokens or bytes than allowed), unsupported `dimensions`, or a `model` name out of bounds.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's tokens a minute (checked before the body is validated); see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The engine is loading or unavailable, or its queue or tokenizer is full; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_embeddings(
    State(inference): State<InferenceState>,
    ScopedUser(user, _): ScopedUser<InferenceScope>,
    ApiJson(request): ApiJson<EmbeddingsRequest>,
) -> Result<Response, AppError> {
    let (response, timing) = service::embeddings(&inference, &user, request).await?;
    Ok(timed(axum::Json(response), timing))
}

/// List the loaded model with its size, backend and adapter.
#[utoipa::path(get, path = "/inference/models", tag = TAG, operation_id = "inference-list-models",
    security(("bearer" = []), ("api_key" = ["inference"])),
    responses(
        (status = 200, description = "The loaded models.", body = ModelList),
        (status = 503, description = "The engine is loading or unavailable.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_models(
    State(inference): State<InferenceState>,
    ScopedUser(_user, _): ScopedUser<InferenceScope>,
) -> Result<axum::Json<ModelList>, AppError> {
    service::models(&inference).map(axum::Json)
}

/// Rank texts by cosine similarity to one text.
#[utoipa::path(post, path = "/inference/similarity", tag = TAG, operation_id = "inference-similarity",
    request_body = SimilarityRequest,
    security(("bearer" = []), ("api_key" = ["inference"])),
    responses(
        (status = 200, description = "One score per target.", body = SimilarityResponse),
        (status = 422, description = "Empty or over-long texts, too many targets or tokens.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's tokens a minute (checked before the body is validated); see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The engine is loading, unavailable or overloaded; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn compare_similarity(
    State(inference): State<InferenceState>,
    ScopedUser(user, _): ScopedUser<InferenceScope>,
    ApiJson(request): ApiJson<SimilarityRequest>,
) -> Result<Response, AppError> {
    let (response, timing) = service::similarity(&inference, &user, request).await?;
    Ok(timed(axum::Json(response), timing))
}

/// Page through the vectors an `embed_texts` execution has stored so far.
#[utoipa::path(get, path = "/inference/batches/{execution_id}/embeddings", tag = TAG, operation_id = "inference-batch-results",
    params(("execution_id" = uuid::Uuid, Path, description = "The `embed_texts` execution."), BatchResultsQuery),
    security(("bearer" = []), ("api_key" = ["inference"])),
    responses(
        (status = 200, description = "Vectors in index order.", body = BatchResultsPage),
        (status = 404, description = "No such `embed_texts` execution visible to the caller.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad `after`, `limit` or `encoding_format`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn batch_results(
    State(platform): State<Platform>,
    ScopedUser(user, _): ScopedUser<InferenceScope>,
    ApiPath(execution_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<BatchResultsQuery>,
) -> Result<axum::Json<BatchResultsPage>, AppError> {
    batch_kind::results_page(&platform, &user, execution_id, &query)
        .await
        .map(axum::Json)
}

/// Each text's token ids, count and whole length as the model reads them, so a
/// client can warn before sending a text that is too long.
#[utoipa::path(post, path = "/inference/tokenize", tag = TAG, operation_id = "inference-tokenize",
    summary = "Count and show the tokens the model reads of each text",
    description = "What a client needs to warn \"too long\" before embedding: the ids the model reads (at most `max_tokens`), whether the text was `truncated`, and its whole length. Charged like embeddings: every token tokenized counts against the caller's tokens a minute.",
    request_body = TokenizeRequest,
    security(("bearer" = []), ("api_key" = ["inference"])),
    responses(
        (status = 200, description = "One entry per text, in order. `x-tokenization-time-ms` says how long tokenizing took.", body = TokenizeResponse),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown model.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty or malformed input, more texts than allowed, more tokens in all than one request may hold, or a bad `model`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's tokens a minute (checked before the body is validated); see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The engine is loading or unavailable, or the tokenizer is full; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn tokenize(
    State(inference): State<InferenceState>,
    ScopedUser(user, _): ScopedUser<InferenceScope>,
    ApiJson(request): ApiJson<TokenizeRequest>,
) -> Result<Response, AppError> {
    let (response, took) = service::tokenize_texts(&inference, &user, request).await?;
    Ok(with_times(
        axum::Json(response),
        &[("x-tokenization-time-ms", took)],
    ))
}

/// Adds the timing headers of an embedding request.
fn timed(body: impl IntoResponse, timing: Timing) -> Response {
    with_times(
        body,
        &[
            ("x-tokenization-time-ms", timing.tokenization),
            ("x-queue-time-ms", timing.queue),
            ("x-inference-time-ms", timing.inference),
        ],
    )
}

/// Adds each named duration as a header (milliseconds, fractional).
fn with_times(body: impl IntoResponse, times: &[(&'static str, Duration)]) -> Response {
    let mut response = body.into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    for (name, took) in times {
        if let Ok(value) = HeaderValue::from_str(&format!("{:.3}", took.as_secs_f64() * 1e3)) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}
