//! The CPU backend: the BERT forward pass on the host, with the `gemm` crate's
//! SIMD kernels (AVX-512 where the CPU has it) for every matrix multiply and a
//! dedicated thread pool sized to the machine.
//!
//! Sequences are packed: padding never enters a matrix multiply. The tokens of all
//! sequences are stacked into one `tokens × hidden` matrix for the dense layers,
//! and attention runs per sequence over its real tokens only, which is exactly the
//! padding mask, and makes a sentence's vector independent of its batch.

use gemm::Parallelism;
use rayon::prelude::*;

use super::backend::{BackendInfo, EncoderBackend};
use super::config::{BertConfig, Pooling};
use super::error::EngineError;
use super::pooling::{l2_normalize, pool};
use super::tokenizer::TokenBatch;
use super::weights::{BertWeights, EncoderLayer, LayerNormWeights, Linear};

/// Elementwise work smaller than this runs on one thread (spawning costs more).
const PARALLEL_CHUNK: usize = 16 * 1024;

/// The BERT encoder on the CPU.
#[derive(Debug)]
pub struct CpuBackend {
    config: BertConfig,
    weights: BertWeights,
    pool: rayon::ThreadPool,
}

/// Where one sequence's tokens sit in the packed token matrix.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    length: usize,
}

impl CpuBackend {
    /// Wraps loaded weights; `threads` of `None` uses every core the process may use.
    pub fn new(
        config: BertConfig,
        weights: BertWeights,
        threads: Option<usize>,
    ) -> Result<Self, EngineError> {
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("inference-cpu-{index}"))
            .build()?;
        Ok(Self {
            config,
            weights,
            pool,
        })
    }

    /// Number of threads the forward pass uses.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn forward(&self, batch: &TokenBatch, pooling: Pooling) -> Vec<Vec<f32>> {
        let spans = pack(&batch.lengths);
        let mut hidden = self.embed(batch);
        for layer in &self.weights.layers {
            hidden = self.encoder_layer(layer, &hidden, &spans);
        }
        let width = self.config.hidden_size;
        spans
            .iter()
            .map(|span| {
                let rows = &hidden[span.start * width..(span.start + span.length) * width];
                let mut vector = pool(rows, width, pooling);
                l2_normalize(&mut vector);
                vector
            })
            .collect()
    }

    /// Word + position + token-type-0 embeddings of the real tokens, layer-normed.
    fn embed(&self, batch: &TokenBatch) -> Vec<f32> {
        let width = self.config.hidden_size;
        let weights = &self.weights;
        let type_row = &weights.token_type_embeddings[..width];
        let mut hidden = Vec::with_capacity(batch.lengths.iter().sum::<usize>() * width);
        for index in 0..batch.len() {
            for (position, &id) in batch.sequence(index).iter().enumerate() {
                let word = &weights.word_embeddings[id as usize * width..][..width];
                let place = &weights.position_embeddings[position * width..][..width];
                hidden.extend(
                    word.iter()
                        .zip(place)
                        .zip(type_row)
                        .map(|((w, p), t)| w + p + t),
                );
            }
        }
        self.layer_norm(&mut hidden, &weights.embedding_norm);
        hidden
    }

    fn encoder_layer(&self, layer: &EncoderLayer, input: &[f32], spans: &[Span]) -> Vec<f32> {
        let qkv = self.linear(input, &layer.qkv, None);
        let context = self.attention(&qkv, spans);
        let mut attended = self.linear(&context, &layer.attention_output, Some(input));
        self.layer_norm(&mut attended, &layer.attention_norm);
        let mut expanded = self.linear(&attended, &layer.intermediate, None);
        gelu_in_place(&mut expanded);
        let mut output = self.linear(&expanded, &layer.output, Some(&attended));
        self.layer_norm(&mut output, &layer.output_norm);
        output
    }

    /// `input·Wᵀ + b (+ residual)` for every token row.
    fn linear(&self, input: &[f32], linear: &Linear, residual: Option<&[f32]>) -> Vec<f32> {
        let rows = input.len() / linear.in_features;
        let width = linear.out_features;
        let mut output = Vec::with_capacity(rows * width);
        for row in 0..rows {
            match residual {
                Some(residual) => output.extend(
                    linear
                        .bias
                        .iter()
                        .zip(&residual[row * width..][..width])
                        .map(|(b, r)| b + r),
                ),
                None => output.extend_from_slice(&linear.bias),
            }
        }
        let lhs = MatrixView::row_major(input, rows, linear.in_features);
        let rhs = MatrixView::row_major(&linear.weight, width, linear.in_features).transposed();
        multiply_accumulate(&mut output, lhs, rhs, 1.0, self.parallelism());
        output
    }

    /// Multi-head self-attention of each sequence over its own tokens; returns the
    /// concatenated head outputs, `tokens × hidden`.
    fn attention(&self, qkv: &[f32], spans: &[Span]) -> Vec<f32> {
        let config = &self.config;
        let width = config.hidden_size;
        let tasks: Vec<(Span, usize)> = spans
            .iter()
            .flat_map(|&span| (0..config.heads).map(move |head| (span, head)))
            .collect();
        let head_outputs: Vec<Vec<f32>> = self.pool.install(|| {
            tasks
                .par_iter()
                .map(|&(span, head)| attend_head(qkv, span, head, config))
                .collect()
        });
        let head_size = config.head_size();
        let mut context = vec![0.0f32; qkv.len() / 3];
        for (&(span, head), output) in tasks.iter().zip(&head_outputs) {
            for (token, values) in output.chunks_exact(head_size).enumerate() {
                let start = (span.start + token) * width + head * head_size;
                context[start..start + head_size].copy_from_slice(values);
            }
        }
        context
    }

    fn layer_norm(&self, rows: &mut [f32], norm: &LayerNormWeights) {
        let width = self.config.hidden_size;
        let eps = self.config.layer_norm_eps;
        let normalize = |row: &mut [f32]| layer_norm_row(row, norm, eps);
        if rows.len() >= PARALLEL_CHUNK {
            self.pool
                .install(|| rows.par_chunks_exact_mut(width).for_each(normalize));
        } else {
            rows.chunks_exact_mut(width).for_each(normalize);
        }
    }

    fn parallelism(&self) -> Parallelism {
        match self.threads() {
            0 | 1 => Parallelism::None,
            threads => Parallelism::Rayon(threads),
        }
    }
}

impl EncoderBackend for CpuBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: "cpu",
            adapter: format!("{} CPU threads", self.threads()),
            api: "gemm (SIMD kernels chosen at run time)".into(),
            device_type: "cpu".into(),
        }
    }

    fn encode(&self, batch: &TokenBatch, pooling: Pooling) -> Result<Vec<Vec<f32>>, EngineError> {
        batch.validate(&self.config)?;
        // Running inside the pool makes gemm's rayon tasks use this backend's threads.
        Ok(self.pool.install(|| self.forward(batch, pooling)))
    }
}

/// Offsets of each sequence in the packed token matrix.
fn pack(lengths: &[usize]) -> Vec<Span> {
    let mut start = 0;
    lengths
        .iter()
        .map(|&length| {
            let span = Span { start, length };
            start += length;
            span
        })
        .collect()
}

/// One head of one sequence: `softmax(Q·Kᵀ/√d)·V`, returned as `length × head_size`.
fn attend_head(qkv: &[f32], span: Span, head: usize, config: &BertConfig) -> Vec<f32> {
    let width = config.hidden_size;
    let head_size = config.head_size();
    let stride = 3 * width;
    let view = |part: usize| MatrixView {
        data: qkv,
        offset: span.start * stride + part * width + head * head_size,
        rows: span.length,
        cols: head_size,
        row_stride: stride,
        col_stride: 1,
    };
    let (queries, keys, values) = (view(0), view(1), view(2));
    let mut scores = vec![0.0f32; span.length * span.length];
    let scale = 1.0 / (head_size as f32).sqrt();
    multiply_accumulate(
        &mut scores,
        queries,
        keys.transposed(),
        scale,
        Parallelism::None,
    );
    scores
        .chunks_exact_mut(span.length)
        .for_each(softmax_in_place);
    let mut output = vec![0.0f32; span.length * head_size];
    let probabilities = MatrixView::row_major(&scores, span.length, span.length);
    multiply_accumulate(&mut output, probabilities, values, 1.0, Parallelism::None);
    output
}

fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for value in row.iter_mut() {
        *value = (*value - max).exp();
        sum += *value;
    }
    row.iter_mut().for_each(|value| *value /= sum);
}

fn layer_norm_row(row: &mut [f32], norm: &LayerNormWeights, eps: f32) {
    let count = row.len() as f32;
    let mean = row.iter().sum::<f32>() / count;
    let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / count;
    let inverse = 1.0 / (variance + eps).sqrt();
    for ((value, scale), shift) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *value = (*value - mean) * inverse * scale + shift;
    }
}

/// GELU in its exact form, `x·Φ(x) = x/2·(1 + erf(x/√2))`, as BERT was trained with.
fn gelu_in_place(values: &mut [f32]) {
    let gelu = |value: &mut f32| {
        *value = 0.5 * *value * (1.0 + libm::erff(*value * std::f32::consts::FRAC_1_SQRT_2));
    };
    if values.len() >= PARALLEL_CHUNK {
        values
            .par_chunks_mut(PARALLEL_CHUNK)
            .for_each(|chunk| chunk.iter_mut().for_each(gelu));
    } else {
        values.iter_mut().for_each(gelu);
    }
}

/// A strided, read-only matrix inside a slice; the bounds are checked once, when a
/// multiply uses it, so the unsafe GEMM call below can trust them.
#[derive(Debug, Clone, Copy)]
struct MatrixView<'data> {
    data: &'data [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'data> MatrixView<'data> {
    fn row_major(data: &'data [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element the view addresses lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last =
            self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        last < self.data.len()
    }
}

/// `dst (row-major, lhs.rows × rhs.cols) += scale · lhs · rhs`.
///
/// # Panics
/// When the shapes disagree or a view reaches outside its slice: both are
/// programming errors in this module, and checking here is what makes the
/// unsafe call sound.
fn multiply_accumulate(
    dst: &mut [f32],
    lhs: MatrixView<'_>,
    rhs: MatrixView<'_>,
    scale: f32,
    parallelism: Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    assert_eq!(dst.len(), m * n, "destination size differs");
    assert!(
        lhs.in_bounds() && rhs.in_bounds(),
        "matrix view out of bounds"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: every element addressed through lhs, rhs (checked by in_bounds) and dst
    // (m × n contiguous, checked above) lies inside its slice; dst is exclusively
    // borrowed, so it aliases neither input. Strides fit in isize as slice lengths do.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}
