//! The model's shape, read from the sentence-transformers directory layout, so one
//! engine serves any BERT-family encoder without hard-coded sizes.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::EngineError;

/// `config.json`: the Hugging Face BERT configuration.
pub const BERT_CONFIG_FILE: &str = "config.json";
/// `tokenizer.json`: the Hugging Face tokenizers pipeline.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// `model.safetensors`: the weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// `1_Pooling/config.json`: how token vectors become one sentence vector.
pub const POOLING_CONFIG_FILE: &str = "1_Pooling/config.json";
/// `sentence_bert_config.json`: the sequence length the model was trained for.
pub const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";

/// The transformer's dimensions, validated so the forward pass can trust them.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Number of encoder layers.
    pub layers: usize,
    /// Width of every token vector.
    pub hidden_size: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Rows of the position-embedding table: the hard limit on sequence length.
    pub max_positions: usize,
    /// Rows of the token-type table (only type 0 is used).
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.heads
    }
}

/// How token vectors are combined into the sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token vectors under the attention mask (sentence-transformers' default).
    Mean,
    /// The vector of the first (`[CLS]`) token.
    Cls,
}

/// Everything the engine needs to know about a model directory besides weights and tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The encoder's dimensions.
    pub bert: BertConfig,
    /// The pooling strategy.
    pub pooling: Pooling,
    /// Longest token sequence (special tokens included) fed to the encoder; longer inputs are truncated.
    pub max_seq_length: usize,
}

#[derive(Deserialize)]
struct RawBertConfig {
    num_hidden_layers: usize,
    hidden_size: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_position_embedding_type")]
    position_embedding_type: String,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".to_owned()
}
fn default_position_embedding_type() -> String {
    "absolute".to_owned()
}

#[derive(Deserialize)]
struct RawPoolingConfig {
    word_embedding_dimension: usize,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct RawSentenceConfig {
    max_seq_length: usize,
}

impl ModelConfig {
    /// Reads and cross-checks the three JSON files of a sentence-transformers directory.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let bert_path = dir.join(BERT_CONFIG_FILE);
        let bert = parse_bert_config(&bert_path, read_json(&bert_path, "BERT configuration")?)?;
        let pooling_path = dir.join(POOLING_CONFIG_FILE);
        let pooling = parse_pooling(
            &pooling_path,
            read_json(&pooling_path, "pooling configuration")?,
            bert.hidden_size,
        )?;
        let sentence_path = dir.join(SENTENCE_CONFIG_FILE);
        let sentence: RawSentenceConfig =
            read_json(&sentence_path, "sentence-transformers configuration")?;
        if sentence.max_seq_length < 2 {
            return Err(inconsistent(
                &sentence_path,
                format!(
                    "max_seq_length {} leaves no room for [CLS] and [SEP]",
                    sentence.max_seq_length
                ),
            ));
        }
        Ok(Self {
            max_seq_length: sentence.max_seq_length.min(bert.max_positions),
            bert,
            pooling,
        })
    }
}

/// Checks that the file exists, reads it and parses it, naming the file on any failure.
pub(crate) fn read_json<T: DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, EngineError> {
    let text = read_file(path, what)?;
    serde_json::from_slice(&text).map_err(|error| EngineError::InvalidJson {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

/// Reads a whole file, telling a missing file apart from an unreadable one.
pub(crate) fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, EngineError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EngineError::MissingFile {
                path: path.to_owned(),
                what,
            }
        } else {
            EngineError::Read {
                path: path.to_owned(),
                source,
            }
        }
    })
}

fn inconsistent(path: &Path, problem: String) -> EngineError {
    EngineError::InconsistentModel {
        path: PathBuf::from(path),
        problem,
    }
}

fn parse_bert_config(path: &Path, raw: RawBertConfig) -> Result<BertConfig, EngineError> {
    let sizes = [
        ("num_hidden_layers", raw.num_hidden_layers),
        ("hidden_size", raw.hidden_size),
        ("num_attention_heads", raw.num_attention_heads),
        ("intermediate_size", raw.intermediate_size),
        ("vocab_size", raw.vocab_size),
        ("max_position_embeddings", raw.max_position_embeddings),
        ("type_vocab_size", raw.type_vocab_size),
    ];
    if let Some((name, _)) = sizes.iter().find(|(_, value)| *value == 0) {
        return Err(inconsistent(path, format!("{name} must be positive")));
    }
    if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
        return Err(inconsistent(
            path,
            format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            ),
        ));
    }
    if raw.hidden_act != "gelu" {
        return Err(inconsistent(
            path,
            format!(
                "hidden_act {:?} is unsupported (only \"gelu\", the erf form)",
                raw.hidden_act
            ),
        ));
    }
    if raw.position_embedding_type != "absolute" {
        return Err(inconsistent(
            path,
            format!(
                "position_embedding_type {:?} is unsupported (only \"absolute\")",
                raw.position_embedding_type
            ),
        ));
    }
    if raw.layer_norm_eps.is_nan() || raw.layer_norm_eps <= 0.0 {
        return Err(inconsistent(path, "layer_norm_eps must be positive".into()));
    }
    Ok(BertConfig {
        layers: raw.num_hidden_layers,
        hidden_size: raw.hidden_size,
        heads: raw.num_attention_heads,
        intermediate_size: raw.intermediate_size,
        vocab_size: raw.vocab_size,
        max_positions: raw.max_position_embeddings,
        type_vocab_size: raw.type_vocab_size,
        layer_norm_eps: raw.layer_norm_eps as f32,
    })
}

fn parse_pooling(
    path: &Path,
    raw: RawPoolingConfig,
    hidden_size: usize,
) -> Result<Pooling, EngineError> {
    if raw.word_embedding_dimension != hidden_size {
        return Err(inconsistent(
            path,
            format!(
                "word_embedding_dimension {} differs from config.json's hidden_size {hidden_size}",
                raw.word_embedding_dimension
            ),
        ));
    }
    if raw.pooling_mode_max_tokens || raw.pooling_mode_mean_sqrt_len_tokens {
        return Err(inconsistent(
            path,
            "max and mean-sqrt-len pooling are unsupported (only mean or CLS)".into(),
        ));
    }
    match (raw.pooling_mode_mean_tokens, raw.pooling_mode_cls_token) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        _ => Err(inconsistent(
            path,
            "exactly one of pooling_mode_mean_tokens and pooling_mode_cls_token must be true"
                .into(),
        )),
    }
}
