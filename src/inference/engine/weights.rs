//! The encoder's weights, read from `model.safetensors` and checked against the
//! configuration so a mismatched file fails at load time, not mid-inference.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::config::{BertConfig, WEIGHTS_FILE, read_file};
use super::error::EngineError;

/// A dense layer `y = x·Wᵀ + b` in PyTorch's layout: `weight` is `out × in`, row-major.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `out_features × in_features`, row-major.
    pub weight: Vec<f32>,
    /// `out_features`.
    pub bias: Vec<f32>,
    /// Rows of `weight`.
    pub out_features: usize,
    /// Columns of `weight`.
    pub in_features: usize,
}

/// A layer norm's scale and shift.
#[derive(Debug, Clone)]
pub struct LayerNormWeights {
    /// Scale (`gamma`).
    pub weight: Vec<f32>,
    /// Shift (`beta`).
    pub bias: Vec<f32>,
}

/// One transformer layer. Query, key and value are fused into one `3·hidden × hidden`
/// projection so a layer starts with one large matrix multiply instead of three.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    /// Rows `[0, h)` query, `[h, 2h)` key, `[2h, 3h)` value.
    pub qkv: Linear,
    /// The attention output projection.
    pub attention_output: Linear,
    /// Layer norm after the attention residual.
    pub attention_norm: LayerNormWeights,
    /// Feed-forward expansion (followed by GELU).
    pub intermediate: Linear,
    /// Feed-forward contraction.
    pub output: Linear,
    /// Layer norm after the feed-forward residual.
    pub output_norm: LayerNormWeights,
}

/// All weights of a BERT encoder (the unused pooler excluded).
#[derive(Debug, Clone)]
pub struct BertWeights {
    /// `vocab × hidden`.
    pub word_embeddings: Vec<f32>,
    /// `max_positions × hidden`.
    pub position_embeddings: Vec<f32>,
    /// `type_vocab × hidden`; only row 0 is used.
    pub token_type_embeddings: Vec<f32>,
    /// Layer norm over the summed embeddings.
    pub embedding_norm: LayerNormWeights,
    /// The encoder layers, in order.
    pub layers: Vec<EncoderLayer>,
}

/// Looks tensors up by name, with or without the `bert.` prefix some checkpoints carry,
/// and checks shape and dtype.
struct TensorSource<'data> {
    tensors: SafeTensors<'data>,
    prefix: &'static str,
    path: PathBuf,
}

impl TensorSource<'_> {
    fn problem(&self, problem: String) -> EngineError {
        EngineError::InvalidWeights {
            path: self.path.clone(),
            problem,
        }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EngineError> {
        let full_name = format!("{}{name}", self.prefix);
        let view = self
            .tensors
            .tensor(&full_name)
            .map_err(|_| self.problem(format!("tensor {full_name} is missing")))?;
        if view.dtype() != Dtype::F32 {
            return Err(self.problem(format!(
                "tensor {full_name} is {:?}; only F32 is supported",
                view.dtype()
            )));
        }
        if view.shape() != shape {
            return Err(self.problem(format!(
                "tensor {full_name} has shape {:?}, config.json implies {shape:?}",
                view.shape()
            )));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .collect())
    }

    fn linear(&self, name: &str, out: usize, input: usize) -> Result<Linear, EngineError> {
        Ok(Linear {
            weight: self.get(&format!("{name}.weight"), &[out, input])?,
            bias: self.get(&format!("{name}.bias"), &[out])?,
            out_features: out,
            in_features: input,
        })
    }

    fn layer_norm(&self, name: &str, width: usize) -> Result<LayerNormWeights, EngineError> {
        Ok(LayerNormWeights {
            weight: self.get(&format!("{name}.weight"), &[width])?,
            bias: self.get(&format!("{name}.bias"), &[width])?,
        })
    }

    fn encoder_layer(
        &self,
        index: usize,
        config: &BertConfig,
    ) -> Result<EncoderLayer, EngineError> {
        let hidden = config.hidden_size;
        let base = format!("encoder.layer.{index}");
        let query = self.linear(&format!("{base}.attention.self.query"), hidden, hidden)?;
        let key = self.linear(&format!("{base}.attention.self.key"), hidden, hidden)?;
        let value = self.linear(&format!("{base}.attention.self.value"), hidden, hidden)?;
        Ok(EncoderLayer {
            qkv: fuse_rows(&[query, key, value]),
            attention_output: self.linear(
                &format!("{base}.attention.output.dense"),
                hidden,
                hidden,
            )?,
            attention_norm: self
                .layer_norm(&format!("{base}.attention.output.LayerNorm"), hidden)?,
            intermediate: self.linear(
                &format!("{base}.intermediate.dense"),
                config.intermediate_size,
                hidden,
            )?,
            output: self.linear(
                &format!("{base}.output.dense"),
                hidden,
                config.intermediate_size,
            )?,
            output_norm: self.layer_norm(&format!("{base}.output.LayerNorm"), hidden)?,
        })
    }
}

/// Stacks dense layers that share an input into one with their outputs concatenated.
fn fuse_rows(parts: &[Linear]) -> Linear {
    Linear {
        weight: parts
            .iter()
            .flat_map(|part| part.weight.iter().copied())
            .collect(),
        bias: parts
            .iter()
            .flat_map(|part| part.bias.iter().copied())
            .collect(),
        out_features: parts.iter().map(|part| part.out_features).sum(),
        in_features: parts.first().map_or(0, |part| part.in_features),
    }
}

impl BertWeights {
    /// Reads `model.safetensors` from the model directory.
    pub fn load(dir: &Path, config: &BertConfig) -> Result<Self, EngineError> {
        let path = dir.join(WEIGHTS_FILE);
        let bytes = read_file(&path, "the encoder weights")?;
        Self::from_safetensors(&path, &bytes, config)
    }

    /// Parses safetensors bytes; `path` only names the file in errors.
    pub fn from_safetensors(
        path: &Path,
        bytes: &[u8],
        config: &BertConfig,
    ) -> Result<Self, EngineError> {
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|error| EngineError::InvalidWeights {
                path: path.to_owned(),
                problem: format!("not a safetensors file: {error}"),
            })?;
        let has_prefix = tensors
            .names()
            .iter()
            .any(|name| name.starts_with("bert.embeddings."));
        let source = TensorSource {
            tensors,
            prefix: if has_prefix { "bert." } else { "" },
            path: path.to_owned(),
        };
        let hidden = config.hidden_size;
        let layers = (0..config.layers)
            .map(|index| source.encoder_layer(index, config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            word_embeddings: source.get(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, hidden],
            )?,
            position_embeddings: source.get(
                "embeddings.position_embeddings.weight",
                &[config.max_positions, hidden],
            )?,
            token_type_embeddings: source.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, hidden],
            )?,
            embedding_norm: source.layer_norm("embeddings.LayerNorm", hidden)?,
            layers,
        })
    }
}
