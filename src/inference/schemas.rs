//! Request and response bodies of `/api/v1/inference`, field for field the
//! OpenAI embeddings API where one exists, so its client libraries work unchanged.

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::inference::config::InferenceConfig;

/// What the OpenAPI document states about the model, which it is written
/// before any model loads: the figures of the default model,
/// all-MiniLM-L6-v2. `GET /inference/models` reports the loaded model's
/// (`dimensions`, `vocab_size`, `max_tokens`), and a test holds these to the
/// real model.
pub mod documented_model {
    /// Length of its vectors: the only `dimensions` it accepts.
    pub const DIMENSIONS: usize = 384;
    /// Size of its vocabulary: token ids are below it.
    pub const VOCAB_SIZE: usize = 30_522;
    /// Most tokens it reads per input (`max_seq_length`).
    pub const MAX_TOKENS: usize = 256;
}

/// Most characters of a `model` name. Model names are short (a Hugging Face id
/// is at most 96); the bound keeps a 404 that quotes the name small.
pub const MAX_MODEL_NAME_CHARS: usize = 256;

/// What the embeddings route's `input` may be, as the `oneOf` of OpenAI's four
/// shapes (so a generated client types it `string | string[] | number[] |
/// number[][]`). Documentation only: the handler reads `input` itself, to
/// name exactly which element is wrong and to check counts before elements.
pub struct EmbeddingInput;

impl PartialSchema for EmbeddingInput {
    fn schema() -> RefOr<Schema> {
        let max_inputs = InferenceConfig::default().max_inputs;
        OneOfBuilder::new()
            .description(Some(
                "A text, an array of texts, an array of token ids or an array of such arrays. \
                 No text or sequence may be empty. Beyond the schema: a text longer than the \
                 model reads (256 tokens for the default model; a text over 32 bytes per such \
                 token, 8,192 bytes, counts as longer without being read), or a sequence of \
                 more ids than that, is refused with 422 `too_long` unless `truncate`; all \
                 inputs together may hold at most `INFERENCE_MAX_REQUEST_TOKENS` (300,000) \
                 tokens (422 `too_many_tokens`).",
            ))
            .item(text_schema("One text."))
            .item(
                ArrayBuilder::new()
                    .items(text_schema("A text."))
                    .min_items(Some(1))
                    .max_items(Some(max_inputs))
                    .description(Some(format!(
                        "Several texts (at most `INFERENCE_MAX_INPUTS`, {max_inputs})."
                    ))),
            )
            .item(token_ids_schema(
                "One sequence of token ids, as the model's tokenizer produces them (special \
                 tokens included).",
            ))
            .item(
                ArrayBuilder::new()
                    .items(token_ids_schema("A sequence of token ids."))
                    .min_items(Some(1))
                    .max_items(Some(max_inputs))
                    .description(Some(format!(
                        "Several sequences of token ids (at most `INFERENCE_MAX_INPUTS`, \
                         {max_inputs})."
                    ))),
            )
            .into()
    }
}

impl ToSchema for EmbeddingInput {}

/// What the tokenize route's `input` may be: one text or several.
/// Documentation only, as for [`EmbeddingInput`].
pub struct TokenizeInput;

impl PartialSchema for TokenizeInput {
    fn schema() -> RefOr<Schema> {
        let max_inputs = InferenceConfig::default().max_inputs;
        OneOfBuilder::new()
            .description(Some(
                "A text or an array of texts, none empty. A text over 32 bytes per token the \
                 model reads (8,192 bytes for the default model) is tokenized only that far.",
            ))
            .item(text_schema("One text."))
            .item(
                ArrayBuilder::new()
                    .items(text_schema("A text."))
                    .min_items(Some(1))
                    .max_items(Some(max_inputs))
                    .description(Some(format!(
                        "Several texts (at most `INFERENCE_MAX_INPUTS`, {max_inputs})."
                    ))),
            )
            .into()
    }
}

impl ToSchema for TokenizeInput {}

/// A non-empty string.
fn text_schema(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .description(Some(description))
}

/// A non-empty array of token ids of the documented model.
fn token_ids_schema(description: &str) -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(documented_model::VOCAB_SIZE - 1))
                .description(Some(format!(
                    "A token id, below the model's `vocab_size` ({} for the default model).",
                    documented_model::VOCAB_SIZE
                ))),
        )
        .min_items(Some(1))
        .description(Some(description))
}

/// `POST /inference/embeddings`: OpenAI's embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// A text, an array of texts, an array of token ids or an array of such arrays.
    #[schema(value_type = EmbeddingInput, example = json!(["A man is eating food.", "A man rides a horse."]))]
    pub input: serde_json::Value,
    /// The model (`GET /inference/models` lists it), by its name or its
    /// Hugging Face id; another name is a 404.
    #[schema(example = "all-MiniLM-L6-v2", min_length = 1, max_length = 256)]
    pub model: String,
    /// `float` (default) or `base64` (little-endian f32s, as OpenAI's clients decode them).
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must equal the model's dimensions when given (384 for the default
    /// model): this model cannot shorten its vectors.
    #[schema(minimum = 384, maximum = 384)]
    pub dimensions: Option<u32>,
    /// An end-user id, accepted for compatibility; requests are attributed to the token's user.
    pub user: Option<String>,
    /// Tessera extension: cut inputs longer than the model reads (`true`) or refuse
    /// them with 422 (`false`). Default: `INFERENCE_TRUNCATE` (false). A text over
    /// 32 bytes per token the model reads is refused, or cut there, before it is tokenized.
    pub truncate: Option<bool>,
}

/// How vectors are written in a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

/// A vector in the requested encoding.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// One input's vector.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    #[schema(example = "embedding")]
    pub object: &'static str,
    /// The input's position in the request (or in the batch execution).
    pub index: usize,
    /// The unit-length vector.
    pub embedding: EmbeddingVector,
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens the model read (special tokens included, after truncation).
    pub prompt_tokens: usize,
    /// The same: embeddings have no completion tokens.
    pub total_tokens: usize,
}

impl Usage {
    /// Usage of `tokens` prompt tokens.
    pub fn of(tokens: usize) -> Self {
        Self {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }
    }
}

/// `POST /inference/embeddings`'s answer: OpenAI's embeddings response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// One entry per input, in input order.
    pub data: Vec<EmbeddingData>,
    /// The model that produced the vectors.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

/// `POST /inference/similarity`: compare one text with others.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityRequest {
    /// The text to compare, not empty. Beyond the schema, as for embeddings:
    /// a text longer than the model reads is refused (422 `too_long`) unless
    /// `truncate`.
    #[schema(example = "A man is eating food.", min_length = 1)]
    pub source: String,
    /// The texts to compare it with (1 to `INFERENCE_MAX_INPUTS` − 1), none empty.
    #[schema(schema_with = similarity_targets)]
    pub targets: Vec<String>,
    /// The model; the loaded one when absent.
    #[schema(min_length = 1, max_length = 256)]
    pub model: Option<String>,
    /// Cut over-long texts instead of refusing them (default `INFERENCE_TRUNCATE`).
    pub truncate: Option<bool>,
}

/// The schema of similarity's `targets`: one input is the source, so one
/// fewer than `INFERENCE_MAX_INPUTS`.
fn similarity_targets() -> ArrayBuilder {
    let max_targets = InferenceConfig::default().max_inputs.saturating_sub(1);
    ArrayBuilder::new()
        .items(text_schema("A text."))
        .min_items(Some(1))
        .max_items(Some(max_targets))
        .description(Some(format!(
            "The texts to compare it with (1 to `INFERENCE_MAX_INPUTS` − 1, {max_targets}), \
             none empty."
        )))
        .examples([serde_json::json!([
            "A man is eating a piece of bread.",
            "The girl is carrying a baby."
        ])])
}

/// Cosine similarities of the source with each target.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarityResponse {
    /// One score in [-1, 1] per target, in target order.
    pub scores: Vec<f32>,
    /// The model used.
    pub model: String,
    /// Token counts of the source and targets together.
    pub usage: Usage,
}

/// One loaded model, as OpenAI lists models, with what a client may want to know.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    /// The name to pass as `model`.
    #[schema(example = "all-MiniLM-L6-v2")]
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// When the model was loaded (Unix seconds).
    pub created: u64,
    /// Always `tessera`.
    pub owned_by: &'static str,
    /// Length of every vector.
    pub dimensions: usize,
    /// Size of the vocabulary: token ids sent as `input` are below it.
    pub vocab_size: usize,
    /// Most tokens read per input; longer inputs are refused or truncated.
    pub max_tokens: usize,
    /// `mean` or `cls`.
    pub pooling: &'static str,
    /// `gpu` or `cpu`.
    pub backend: &'static str,
    /// The GPU adapter or the CPU threads.
    pub adapter: String,
    /// `vulkan`, `metal`, `dx12` or the CPU kernels.
    pub api: String,
    /// `discrete_gpu`, `integrated_gpu`, `virtual_gpu`, `other` or `cpu`.
    pub device_type: String,
    /// How the weights are stored: `f32`, `bf16` (CPU) or `f16` (GPU); arithmetic
    /// accumulates in f32.
    pub precision: &'static str,
}

/// `GET /inference/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The loaded models.
    pub data: Vec<ModelCard>,
}

/// `?after=&limit=&encoding_format=` of a batch's result pages.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchResultsQuery {
    /// Return vectors after this index (the previous page's `next_after`).
    pub after: Option<i32>,
    /// Vectors per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<EncodingFormat>,
}

/// One page of an `embed_texts` execution's vectors.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResultsPage {
    /// Always `list`.
    pub object: &'static str,
    /// Vectors in index order.
    pub data: Vec<EmbeddingData>,
    /// The model that produced them.
    pub model: String,
    /// Pass as `after` for the next page; `null` on the last stored page.
    pub next_after: Option<i32>,
}

/// `POST /inference/tokenize`: what the model would read of each text, so a
/// client can warn that a text is too long before sending it to be embedded.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// A text or an array of texts.
    #[schema(value_type = TokenizeInput, example = json!(["A man is eating food.", "A man rides a horse."]))]
    pub input: serde_json::Value,
    /// The model; the loaded one when absent.
    #[schema(min_length = 1, max_length = 256)]
    pub model: Option<String>,
}

/// One text's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenizedText {
    /// The text's position in `input`.
    pub index: usize,
    /// The token ids the model reads, special tokens included (these are
    /// also a valid embeddings `input`).
    pub ids: Vec<u32>,
    /// How many ids that is: at most `max_tokens`.
    pub tokens: usize,
    /// Whether the text holds more than the model reads: embeddings refuse it
    /// (422 `too_long`) unless asked to `truncate`, and then read `ids`.
    pub truncated: bool,
    /// Tokens the whole text holds, special tokens included; `null` when the
    /// text is over 32 bytes per token the model reads and was not tokenized
    /// whole (it surely holds more than the model reads).
    #[schema(required = true)]
    pub original_tokens: Option<usize>,
}

/// `POST /inference/tokenize`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenizeResponse {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// One entry per text, in input order.
    pub data: Vec<TokenizedText>,
    /// The model whose tokenizer was used.
    pub model: String,
    /// Most tokens the model reads per text.
    pub max_tokens: usize,
    /// Tokens tokenized, as charged to the caller's tokens a minute.
    pub usage: Usage,
}
