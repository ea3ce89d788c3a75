//! The CPU backend: the BERT forward pass on the host, on Tessera's own kernels
//! (the `tessera-kernels` crate: AVX-512F or AVX2 + FMA chosen at run time, AMX
//! or else AVX512-BF16 for bf16 where the CPU has them, NEON on aarch64, the
//! `gemm` crate elsewhere) over weights packed once at load, with a dedicated
//! thread pool sized to the machine.
//!
//! Sequences are packed: padding never enters a matrix multiply. The tokens of all
//! sequences are stacked into one `tokens × hidden` matrix for the dense layers,
//! and attention runs per sequence over its real tokens only, which is exactly the
//! padding mask, and makes a sentence's vector independent of its batch.

use tessera_kernels::{Fused, Kernels, PackedLinear, Precision, Table, TokenRange};

use super::backend::{BackendInfo, EncoderBackend};
use super::config::{BertConfig, Pooling};
use super::error::EngineError;
use super::pooling::{l2_normalize, pool};
use super::tokenizer::TokenBatch;
use super::weights::{BertWeights, EncoderLayer, LayerNormWeights, Linear};

/// The BERT encoder on the CPU.
#[derive(Debug)]
pub struct CpuBackend {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<PackedLayer>,
    kernels: Kernels,
    precision: Precision,
    pool: rayon::ThreadPool,
}

/// The embedding tables (looked up, not multiplied), in the weights' precision.
#[derive(Debug)]
struct Embeddings {
    word: Table,
    position: Table,
    token_type: Table,
    norm: LayerNormWeights,
}

/// One encoder layer with its dense layers in the kernels' layout.
#[derive(Debug)]
struct PackedLayer {
    qkv: PackedLinear,
    attention_output: PackedLinear,
    attention_norm: LayerNormWeights,
    intermediate: PackedLinear,
    output: PackedLinear,
    output_norm: LayerNormWeights,
}

impl CpuBackend {
    /// Packs loaded weights for the best kernels this CPU runs, in `precision`
    /// (kept `f32` where the CPU cannot store bf16, which the log says);
    /// `threads` of `None` uses every core the process may use.
    pub fn new(
        config: BertConfig,
        weights: BertWeights,
        threads: Option<usize>,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("inference-cpu-{index}"))
            .build()?;
        let kernels = Kernels::detect();
        let precision = if kernels.stores(precision) {
            precision
        } else {
            tracing::info!(
                requested = precision.name(),
                isa = kernels.isa().name(),
                "this CPU has no SIMD kernels for bf16 weights: keeping them f32"
            );
            Precision::F32
        };
        let BertWeights {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embedding_norm,
            layers,
        } = weights;
        let pack = |linear: Linear| {
            kernels.pack_linear(
                &linear.weight,
                &linear.bias,
                linear.out_features,
                linear.in_features,
                precision,
            )
        };
        let layers = layers
            .into_iter()
            .map(|layer: EncoderLayer| PackedLayer {
                qkv: pack(layer.qkv),
                attention_output: pack(layer.attention_output),
                attention_norm: layer.attention_norm,
                intermediate: pack(layer.intermediate),
                output: pack(layer.output),
                output_norm: layer.output_norm,
            })
            .collect();
        let width = config.hidden_size;
        Ok(Self {
            embeddings: Embeddings {
                word: Table::new(word_embeddings, width, precision),
                position: Table::new(position_embeddings, width, precision),
                token_type: Table::new(token_type_embeddings, width, precision),
                norm: embedding_norm,
            },
            config,
            layers,
            kernels,
            precision,
            pool,
        })
    }

    /// Number of threads the forward pass uses.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn forward(&self, batch: &TokenBatch, pooling: Pooling) -> Vec<Vec<f32>> {
        let sequences = token_ranges(&batch.lengths);
        let mut hidden = self.embed(batch);
        for layer in &self.layers {
            hidden = self.encoder_layer(layer, &hidden, &sequences);
        }
        let width = self.config.hidden_size;
        sequences
            .iter()
            .map(|sequence| {
                let rows = &hidden[sequence.start * width..sequence.end * width];
                let mut vector = pool(rows, width, pooling);
                l2_normalize(&mut vector);
                vector
            })
            .collect()
    }

    /// Word + position + token-type-0 embeddings of the real tokens, layer-normed.
    fn embed(&self, batch: &TokenBatch) -> Vec<f32> {
        let width = self.config.hidden_size;
        let tables = &self.embeddings;
        let mut hidden = vec![0.0f32; batch.lengths.iter().sum::<usize>() * width];
        let mut rows = hidden.chunks_exact_mut(width);
        for index in 0..batch.len() {
            for (position, (&id, row)) in batch.sequence(index).iter().zip(&mut rows).enumerate() {
                // `validate` checked every id against the vocabulary and every
                // position against max_positions.
                tables.word.add_row(id as usize, row);
                tables.position.add_row(position, row);
                tables.token_type.add_row(0, row);
            }
        }
        self.layer_norm(&mut hidden, &tables.norm);
        hidden
    }

    /// Attention, then the feed-forward block, each with its residual added in
    /// the dense layer's store and followed by a layer norm.
    fn encoder_layer(
        &self,
        layer: &PackedLayer,
        input: &[f32],
        sequences: &[TokenRange],
    ) -> Vec<f32> {
        let kernels = self.kernels;
        let qkv = kernels.linear(input, &layer.qkv, Fused::Bias);
        let context =
            kernels.attention(&qkv, sequences, self.config.heads, self.config.head_size());
        let mut attended =
            kernels.linear(&context, &layer.attention_output, Fused::Residual(input));
        self.layer_norm(&mut attended, &layer.attention_norm);
        let expanded = kernels.linear(&attended, &layer.intermediate, Fused::Gelu);
        let mut output = kernels.linear(&expanded, &layer.output, Fused::Residual(&attended));
        self.layer_norm(&mut output, &layer.output_norm);
        output
    }

    fn layer_norm(&self, rows: &mut [f32], norm: &LayerNormWeights) {
        self.kernels
            .layer_norm(rows, &norm.weight, &norm.bias, self.config.layer_norm_eps);
    }
}

impl EncoderBackend for CpuBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "cpu",
            adapter: format!("{} CPU threads", self.threads()),
            api: format!("tessera kernels ({})", self.kernels.name(self.precision)),
            device_type: "cpu".into(),
            precision: self.precision.name(),
        }
    }

    fn encode(&self, batch: &TokenBatch, pooling: Pooling) -> Result<Vec<Vec<f32>>, EngineError> {
        batch.validate(&self.config)?;
        // Running inside the pool makes the kernels' rayon tasks use its threads.
        Ok(self.pool.install(|| self.forward(batch, pooling)))
    }
}

/// The rows of each sequence in the packed token matrix.
fn token_ranges(lengths: &[usize]) -> Vec<TokenRange> {
    let mut start = 0;
    lengths
        .iter()
        .map(|&length| {
            start += length;
            start - length..start
        })
        .collect()
}
