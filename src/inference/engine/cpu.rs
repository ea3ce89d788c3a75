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

use std::ops::Range;

use rayon::prelude::*;
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

    /// The pooled, normalised vectors of the batch's sequences in `part`.
    fn forward(&self, batch: &TokenBatch, part: Range<usize>, pooling: Pooling) -> Vec<Vec<f32>> {
        let sequences = token_ranges(&batch.lengths[part.clone()]);
        let mut hidden = self.embed(batch, part);
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

    /// Word + position + token-type-0 embeddings of the real tokens of the
    /// sequences in `part`, layer-normed.
    fn embed(&self, batch: &TokenBatch, part: Range<usize>) -> Vec<f32> {
        let width = self.config.hidden_size;
        let tables = &self.embeddings;
        let mut hidden = vec![0.0f32; batch.lengths[part.clone()].iter().sum::<usize>() * width];
        let mut rows = hidden.chunks_exact_mut(width);
        for index in part {
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
        // One forward pass per thread, over its share of the sequences (a
        // vector never depends on its batch), rather than every thread on every
        // layer of one pass: each pass then runs mostly on its own thread, and a
        // thread that finishes early, or whose partner is preempted by the HTTP
        // side, steals the other's kernel tasks instead of waiting for it at
        // each of the pass's ~40 joins. A lone sequence is split inside the
        // kernels (by output columns). Running inside the pool makes the
        // kernels' rayon tasks use its threads.
        let parts = split_by_tokens(&batch.lengths, self.threads());
        Ok(self.pool.install(|| {
            parts
                .into_par_iter()
                .flat_map_iter(|part| self.forward(batch, part, pooling))
                .collect()
        }))
    }
}

/// Cuts a batch's sequences into `parts` contiguous runs of about equal
/// tokens (fewer when there are fewer sequences; none for an empty batch).
fn split_by_tokens(lengths: &[usize], parts: usize) -> Vec<Range<usize>> {
    if lengths.is_empty() {
        return Vec::new();
    }
    let parts = parts.clamp(1, lengths.len());
    let total: usize = lengths.iter().sum();
    let mut runs = Vec::with_capacity(parts);
    let (mut start, mut seen) = (0, 0);
    for (index, &length) in lengths.iter().enumerate() {
        seen += length;
        let cut = runs.len() + 1;
        let sequences_after = lengths.len() - (index + 1);
        let runs_after = parts.saturating_sub(cut);
        // Cut at this run's share of the tokens, or sooner when only one
        // sequence per remaining run is left.
        if cut < parts
            && sequences_after >= runs_after
            && (sequences_after == runs_after || seen * parts >= total * cut)
        {
            runs.push(start..index + 1);
            start = index + 1;
        }
    }
    runs.push(start..lengths.len());
    runs
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

#[cfg(test)]
mod tests {
    use super::split_by_tokens;

    #[test]
    fn runs_cover_every_sequence_in_order_and_share_the_tokens() {
        assert!(split_by_tokens(&[], 2).is_empty());
        assert_eq!(split_by_tokens(&[15], 2), vec![0..1]);
        assert_eq!(split_by_tokens(&[16; 32], 2), vec![0..16, 16..32]);
        assert_eq!(split_by_tokens(&[500, 5, 5, 5], 2), vec![0..1, 1..4]);
        assert_eq!(split_by_tokens(&[1, 1, 100], 3), vec![0..1, 1..2, 2..3]);
        assert_eq!(split_by_tokens(&[1, 100], 2), vec![0..1, 1..2]);
        assert_eq!(split_by_tokens(&[3, 3, 3], 1), vec![0..3]);
        assert_eq!(split_by_tokens(&[3, 3], 0), vec![0..2]);
    }

    #[test]
    fn runs_are_never_empty_and_never_more_than_sequences_or_parts() {
        for count in 1..12usize {
            for parts in 1..5usize {
                let lengths: Vec<usize> = (0..count).map(|index| 1 + (index * 37) % 11).collect();
                let runs = split_by_tokens(&lengths, parts);
                assert_eq!(runs.len(), parts.min(count), "{lengths:?} into {parts}");
                assert_eq!(runs.first().map(|run| run.start), Some(0));
                assert_eq!(runs.last().map(|run| run.end), Some(count));
                for pair in runs.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start, "contiguous: {runs:?}");
                }
                assert!(runs.iter().all(|run| !run.is_empty()), "{runs:?}");
            }
        }
    }
}
