//! Request and response bodies of `/api/v1/inference`, field for field the
//! OpenAI embeddings API where one exists, so its client libraries work unchanged.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The shapes `input` may take (documentation only: the handler reads `input`
/// itself to say exactly which element is wrong).
#[derive(Debug, ToSchema)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One sequence of token ids, as the model's tokenizer produces them
    /// (special tokens included).
    Tokens(Vec<u32>),
    /// Several sequences of token ids.
    TokenSequences(Vec<Vec<u32>>),
}

/// `POST /inference/embeddings`: OpenAI's embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// A text, an array of texts, an array of token ids or an array of such arrays.
    /// No text or sequence may be empty.
    #[schema(value_type = EmbeddingInput, example = json!(["A man is eating food.", "A man rides a horse."]))]
    pub input: serde_json::Value,
    /// The model (`GET /inference/models` lists it).
    #[schema(example = "all-MiniLM-L6-v2")]
    pub model: String,
    /// `float` (default) or `base64` (little-endian f32s, as OpenAI's clients decode them).
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must equal the model's dimensions when given: this model cannot shorten its vectors.
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
    /// The text to compare.
    #[schema(example = "A man is eating food.")]
    pub source: String,
    /// The texts to compare it with (1 to `INFERENCE_MAX_INPUTS` − 1).
    #[schema(example = json!(["A man is eating a piece of bread.", "The girl is carrying a baby."]))]
    pub targets: Vec<String>,
    /// The model; the loaded one when absent.
    pub model: Option<String>,
    /// Cut over-long texts instead of refusing them (default `INFERENCE_TRUNCATE`).
    pub truncate: Option<bool>,
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
