//! Tessera's CPU kernels for the BERT encoder: dense layers over weights packed
//! once at load, with bias, residual and GELU fused into the store; attention per
//! sequence and head; the layer norm.
//!
//! All SIMD code lives in this crate, written once over a vector trait and
//! compiled for AVX-512F and for AVX2 + FMA on x86-64 (the best one picked at
//! run time, [`Isa::detect`]) and for NEON on aarch64; bf16 dense layers run on
//! AMX's tile unit where the CPU has one (`amx.rs`), else on AVX512-BF16's
//! dot products where it has those (`dot_bf16.rs`). On any other CPU the
//! dense layers go through the `gemm` crate, which is also the oracle the tests
//! compare the hand-written kernels with (`task test-aarch64` runs them for
//! aarch64 under qemu). It is a crate of its own so that it is optimised even in debug builds
//! (the engine's tests would crawl otherwise) and rebuilt only when it changes.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx;
mod attention;
#[cfg(target_arch = "x86_64")]
mod bf16_pairs;
#[cfg(target_arch = "x86_64")]
mod dot_bf16;
mod gemm;
mod isa;
mod math;
mod portable;
mod vector;

#[cfg(test)]
mod tests;

use std::ops::Range;

use rayon::prelude::*;

use crate::attention::HeadSlice;
use crate::gemm::{Bf16, Destination, PanelElement, Panels, Rows};
pub use crate::isa::Isa;

/// How weights are stored; arithmetic is `f32` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Weights as loaded.
    #[default]
    F32,
    /// Weights rounded to bfloat16 (half the memory and memory traffic); where
    /// the CPU multiplies bf16 (AMX, AVX512-BF16) the activations are rounded
    /// too, else the weights are widened to `f32` in registers.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err("expected f32 or bf16".to_owned()),
        }
    }
}

impl Precision {
    /// The name used in settings and responses (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// What the dense layer does with `x·Wᵀ + b` before storing it.
#[derive(Debug, Clone, Copy)]
pub enum Fused<'data> {
    /// Nothing more.
    Bias,
    /// Adds a residual of the output's shape.
    Residual(&'data [f32]),
    /// Applies GELU (the exact, erf form).
    Gelu,
}

/// A dense layer `y = x·Wᵀ + b`, its weights laid out for one [`Kernels`].
#[derive(Debug, Clone)]
pub struct PackedLinear {
    weights: PackedWeights,
    /// `out_features`, zero-padded to whole panels.
    bias: Vec<f32>,
    in_features: usize,
    out_features: usize,
    kernels: Kernels,
}

#[derive(Debug, Clone)]
enum PackedWeights {
    F32(Panels<f32>),
    Bf16(Panels<Bf16>),
    /// PyTorch's `out × in` row-major layout, for the `gemm` crate.
    RowMajor(Vec<f32>),
    /// bf16 in the pair layout of AMX and AVX512-BF16.
    #[cfg(target_arch = "x86_64")]
    Pairs(bf16_pairs::PairPanels),
}

/// A lookup table of `width`-wide rows (token, position and type embeddings),
/// stored in a [`Precision`] like the dense layers; rows are read out as f32.
#[derive(Debug, Clone)]
pub struct Table {
    values: TableValues,
    width: usize,
}

#[derive(Debug, Clone)]
enum TableValues {
    F32(Vec<f32>),
    Bf16(Vec<Bf16>),
}

impl Table {
    /// Stores `values` (whole rows of `width`) in `precision`.
    ///
    /// # Panics
    /// When `values` is not whole rows.
    pub fn new(values: Vec<f32>, width: usize, precision: Precision) -> Self {
        assert!(
            width > 0 && values.len().is_multiple_of(width),
            "table is not whole rows"
        );
        let values = match precision {
            Precision::F32 => TableValues::F32(values),
            Precision::Bf16 => {
                TableValues::Bf16(values.iter().map(|&v| Bf16::from_f32(v)).collect())
            }
        };
        Self { values, width }
    }

    /// Adds row `index` to `target`.
    ///
    /// # Panics
    /// When `index` is past the last row or `target` is not one row wide.
    pub fn add_row(&self, index: usize, target: &mut [f32]) {
        assert_eq!(target.len(), self.width, "target is not one row");
        let range = index * self.width..(index + 1) * self.width;
        match &self.values {
            TableValues::F32(values) => {
                for (sum, &value) in target.iter_mut().zip(&values[range]) {
                    *sum += value;
                }
            }
            TableValues::Bf16(values) => {
                for (sum, &value) in target.iter_mut().zip(&values[range]) {
                    *sum += value.to_f32();
                }
            }
        }
    }

    /// Bytes the values take.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        match &self.values {
            TableValues::F32(values) => std::mem::size_of_val(values.as_slice()),
            TableValues::Bf16(values) => std::mem::size_of_val(values.as_slice()),
        }
    }
}

/// A sequence's rows in a packed token matrix.
pub type TokenRange = Range<usize>;

/// The kernels of one instruction set, and what multiplies its bf16 dense
/// layers; the parallel ones run on the current rayon pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    isa: Isa,
    bf16: Bf16Multiply,
}

/// What multiplies bf16 dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bf16Multiply {
    /// The f32 kernels, the weights widened in registers: every instruction set.
    Widened,
    /// AVX512-BF16's `VDPBF16PS` (`dot_bf16.rs`).
    DotProduct,
    /// AMX's tiles (`amx.rs`).
    Amx,
}

/// Bytes of the left operand one task keeps hot in L2: each of its panels
/// streams past the same rows, so those rows come from memory once per task.
const ROW_BLOCK_BYTES: usize = 384 * 1024;
/// Most tiles of rows per task.
const ROW_BLOCK_TILES: usize = 16;
/// Tasks per thread to aim for, so that uneven tasks still balance.
const TASKS_PER_THREAD: usize = 4;
/// Elements of layer-norm work below which one thread does it all.
const PARALLEL_ELEMENTS: usize = 16 * 1024;

impl Kernels {
    /// The best kernels this CPU runs: for bf16, AMX where it has it, else
    /// AVX512-BF16 where it has that.
    pub fn detect() -> Self {
        let kernels = Self {
            isa: Isa::detect(),
            bf16: Bf16Multiply::Widened,
        };
        kernels
            .with_amx()
            .or_else(|| kernels.with_bf16_dot_product())
            .unwrap_or(kernels)
    }

    /// Every variant this CPU runs, for tests and benchmarks: each instruction
    /// set with widened bf16, and AVX-512 with each bf16 unit it has.
    pub fn every_variant() -> Vec<Self> {
        Isa::supported()
            .into_iter()
            .filter_map(Self::for_isa)
            .flat_map(|kernels| {
                [
                    Some(kernels),
                    kernels.with_bf16_dot_product(),
                    kernels.with_amx(),
                ]
            })
            .flatten()
            .collect()
    }

    /// The kernels of `isa`, bf16 widened to f32, if this CPU runs it.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        isa.is_supported().then_some(Self {
            isa,
            bf16: Bf16Multiply::Widened,
        })
    }

    /// These kernels with bf16 dense layers on AMX, if this CPU (and its
    /// operating system) runs AMX and the instruction set is AVX-512.
    pub fn with_amx(self) -> Option<Self> {
        (self.isa == Isa::Avx512 && amx_available()).then_some(Self {
            bf16: Bf16Multiply::Amx,
            ..self
        })
    }

    /// These kernels with bf16 dense layers on AVX512-BF16's dot products, if
    /// this CPU has them and the instruction set is AVX-512.
    pub fn with_bf16_dot_product(self) -> Option<Self> {
        (self.isa == Isa::Avx512 && bf16_dot_product_available()).then_some(Self {
            bf16: Bf16Multiply::DotProduct,
            ..self
        })
    }

    /// The instruction set.
    pub fn isa(self) -> Isa {
        self.isa
    }

    /// What runs `precision`'s dense layers, for logs and `/ready`: the
    /// instruction set, with the unit that multiplies bf16 where it has one.
    pub fn name(self, precision: Precision) -> &'static str {
        match (precision, self.bf16) {
            (Precision::Bf16, Bf16Multiply::Amx) => "avx512f+amx-bf16",
            (Precision::Bf16, Bf16Multiply::DotProduct) => "avx512f+avx512-bf16",
            _ => self.isa.name(),
        }
    }

    /// Whether `precision` is stored as asked (bf16 needs a SIMD instruction set;
    /// the portable path keeps `f32`).
    pub fn stores(self, precision: Precision) -> bool {
        precision == Precision::F32 || self.isa != Isa::Portable
    }

    /// Lays out a PyTorch dense layer (`weight` is `out × in`, row-major) once.
    /// A precision this CPU does not store ([`Self::stores`]) is kept as `f32`.
    ///
    /// # Panics
    /// When `weight` is not `out_features × in_features` or `bias` not `out_features`.
    pub fn pack_linear(
        self,
        weight: &[f32],
        bias: &[f32],
        out_features: usize,
        in_features: usize,
        precision: Precision,
    ) -> PackedLinear {
        assert_eq!(weight.len(), out_features * in_features, "weight shape");
        assert_eq!(bias.len(), out_features, "bias length");
        let width = self.isa.panel_width();
        let column = |index: usize| &weight[index * in_features..][..in_features];
        let weights = match (self.isa, precision) {
            (Isa::Portable, _) => PackedWeights::RowMajor(weight.to_vec()),
            #[cfg(target_arch = "x86_64")]
            (_, Precision::Bf16) if self.bf16 != Bf16Multiply::Widened => PackedWeights::Pairs(
                bf16_pairs::PairPanels::from_columns(in_features, out_features, column),
            ),
            (_, Precision::F32) => PackedWeights::F32(Panels::from_columns(
                in_features,
                out_features,
                width,
                column,
            )),
            (_, Precision::Bf16) => PackedWeights::Bf16(Panels::from_columns(
                in_features,
                out_features,
                width,
                column,
            )),
        };
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(out_features.next_multiple_of(width), 0.0);
        PackedLinear {
            weights,
            bias: padded_bias,
            in_features,
            out_features,
            kernels: self,
        }
    }

    /// `input·Wᵀ + b`, then `fused`, for every `in_features`-wide row of `input`.
    ///
    /// # Panics
    /// When `input` is not whole rows, a residual is not the output's shape, or
    /// `layer` was packed by other kernels.
    pub fn linear(self, input: &[f32], layer: &PackedLinear, fused: Fused<'_>) -> Vec<f32> {
        assert_eq!(layer.kernels, self, "layer packed for other kernels");
        assert_eq!(
            input.len() % layer.in_features.max(1),
            0,
            "input is not whole rows"
        );
        let rows = input.len().checked_div(layer.in_features).unwrap_or(0);
        let mut output = vec![0.0f32; rows * layer.out_features];
        let residual = match fused {
            Fused::Residual(residual) => {
                assert_eq!(residual.len(), output.len(), "residual shape");
                Some(residual)
            }
            Fused::Bias | Fused::Gelu => None,
        };
        let epilogue = gemm::Epilogue {
            bias: Some(&layer.bias),
            residual,
            gelu: matches!(fused, Fused::Gelu),
        };
        let left = Rows {
            data: input,
            count: rows,
            depth: layer.in_features,
            stride: layer.in_features,
        };
        match &layer.weights {
            PackedWeights::F32(panels) => self.multiply(left, panels, &epilogue, &mut output),
            PackedWeights::Bf16(panels) => self.multiply(left, panels, &epilogue, &mut output),
            PackedWeights::RowMajor(weight) => {
                portable::linear(left, weight, layer.out_features, &epilogue, &mut output);
                if epilogue.gelu {
                    // SAFETY: Portable runs on every CPU.
                    unsafe { isa::gelu_in_place(Isa::Portable, &mut output) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            PackedWeights::Pairs(panels) => {
                self.multiply_pairs(left, panels, &epilogue, &mut output)
            }
        }
        output
    }

    /// Runs the bf16 unit's multiply over tasks of row blocks × column blocks.
    #[cfg(target_arch = "x86_64")]
    fn multiply_pairs(
        self,
        left: Rows<'_>,
        panels: &bf16_pairs::PairPanels,
        epilogue: &gemm::Epilogue<'_>,
        output: &mut [f32],
    ) {
        assert!(
            left.in_bounds() && left.depth == panels.depth(),
            "operand shapes"
        );
        assert_eq!(output.len(), left.count * panels.columns(), "output shape");
        // SAFETY: (both) pair panels are only packed by kernels whose bf16
        // unit runs here (`with_amx`, `with_bf16_dot_product`), and `linear`
        // checked that these are those kernels.
        let (multiply, tile_rows): (unsafe fn(bf16_pairs::Task<'_>), usize) = match self.bf16 {
            #[cfg(target_os = "linux")]
            Bf16Multiply::Amx => (amx::multiply, amx::BLOCK_ROWS),
            _ => (dot_bf16::multiply, dot_bf16::TILE_ROWS),
        };
        let plan = BlockPlan::new(left.count, tile_rows, panels.blocks(), left.depth);
        let out = Destination::row_major(output, panels.columns());
        plan.run(|row_range, block_range| {
            // SAFETY: the unit runs here (above); shapes were checked above;
            // tasks cover disjoint row × column blocks, so no element is
            // written twice.
            unsafe {
                multiply(bf16_pairs::Task {
                    rows: left,
                    panels,
                    epilogue,
                    out,
                    row_range,
                    block_range,
                });
            }
        });
    }

    /// Runs the packed multiply over tasks of row blocks × panel blocks.
    fn multiply<E: PanelElement>(
        self,
        left: Rows<'_>,
        panels: &Panels<E>,
        epilogue: &gemm::Epilogue<'_>,
        output: &mut [f32],
    ) {
        assert!(
            left.in_bounds() && left.depth == panels.depth(),
            "operand shapes"
        );
        assert_eq!(panels.width(), self.isa.panel_width(), "panel width");
        assert_eq!(output.len(), left.count * panels.columns(), "output shape");
        let plan = BlockPlan::new(left.count, self.isa.tile_rows(), panels.count(), left.depth);
        let out = Destination::row_major(output, panels.columns());
        plan.run(|row_range, panel_range| {
            // SAFETY: self.isa is supported (Kernels is only built for one that
            // is) and the panels are its width; shapes were checked above; tasks
            // cover disjoint row × panel blocks, so no element is written twice.
            unsafe {
                isa::multiply_block(
                    self.isa,
                    gemm::Block {
                        rows: left,
                        panels,
                        epilogue,
                        out,
                        row_range,
                        panel_range,
                    },
                );
            }
        });
    }

    /// Multi-head self-attention of each sequence over its own tokens. `qkv` is
    /// `tokens × 3·hidden` (queries | keys | values); returns the concatenated
    /// head outputs, `tokens × hidden`.
    ///
    /// # Panics
    /// When the shapes disagree or the sequences overlap, leave the matrix or are
    /// out of order.
    pub fn attention(
        self,
        qkv: &[f32],
        sequences: &[TokenRange],
        heads: usize,
        head_size: usize,
    ) -> Vec<f32> {
        let hidden = heads * head_size;
        assert_eq!(qkv.len() % (3 * hidden).max(1), 0, "qkv is not whole rows");
        let tokens = qkv.len().checked_div(3 * hidden).unwrap_or(0);
        let mut end = 0;
        for sequence in sequences {
            assert!(
                sequence.start >= end && sequence.end >= sequence.start && sequence.end <= tokens,
                "sequences must be in order, disjoint and inside the matrix"
            );
            end = sequence.end;
        }
        let mut context = vec![0.0f32; tokens * hidden];
        let place = Destination::row_major(&mut context, hidden);
        let slices: Vec<HeadSlice> = sequences
            .iter()
            .filter(|sequence| !sequence.is_empty())
            .flat_map(|sequence| {
                (0..heads).map(move |head| HeadSlice {
                    start: sequence.start,
                    length: sequence.len(),
                    head,
                    head_size,
                    hidden,
                })
            })
            .collect();
        slices.par_iter().for_each(|&slice| {
            // SAFETY: the instruction set is supported; the sequences were checked
            // to lie inside qkv and not to overlap, so each (sequence, head) task
            // writes its own rows × head columns of `context` only.
            unsafe { isa::attend(self.isa, qkv, slice, place) };
        });
        context
    }

    /// Layer norm of every `scale.len()`-wide row, in place.
    ///
    /// # Panics
    /// When `rows` is not whole rows or `shift` is not as wide as `scale`.
    pub fn layer_norm(self, rows: &mut [f32], scale: &[f32], shift: &[f32], eps: f32) {
        let width = scale.len();
        assert!(width > 0 && shift.len() == width, "layer norm widths");
        assert_eq!(rows.len() % width, 0, "rows are not whole");
        // SAFETY: the instruction set is supported.
        let normalize = |chunk: &mut [f32]| unsafe {
            isa::layer_norm_rows(self.isa, chunk, scale, shift, eps);
        };
        if rows.len() >= PARALLEL_ELEMENTS {
            let rows_per_task = (PARALLEL_ELEMENTS / width).max(1);
            rows.par_chunks_mut(rows_per_task * width)
                .for_each(normalize);
        } else {
            normalize(rows);
        }
    }
}

/// Whether this CPU runs AVX512-BF16's dot products.
fn bf16_dot_product_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        dot_bf16::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU and operating system run bf16 on AMX.
fn amx_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        amx::available()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// How one multiply is cut into tasks: blocks of whole tiles of rows, small
/// enough to stay in L2 while every panel of the task passes them, times blocks
/// of panels, as few as keep every thread busy (at batch 1 the rows are one
/// block, so the panels are split; at large batches a task takes every panel).
#[derive(Debug, Clone, Copy)]
struct BlockPlan {
    rows: usize,
    rows_per_block: usize,
    panels: usize,
    panels_per_block: usize,
}

impl BlockPlan {
    fn new(rows: usize, tile_rows: usize, panels: usize, depth: usize) -> Self {
        let row_tiles = rows.div_ceil(tile_rows);
        let tile_bytes = (tile_rows * depth * std::mem::size_of::<f32>()).max(1);
        let tiles_per_block = (ROW_BLOCK_BYTES / tile_bytes)
            .clamp(1, ROW_BLOCK_TILES)
            .min(row_tiles.max(1));
        let row_blocks = row_tiles.div_ceil(tiles_per_block);
        let wanted_tasks = rayon::current_num_threads() * TASKS_PER_THREAD;
        let panel_blocks = wanted_tasks.div_ceil(row_blocks.max(1));
        Self {
            rows,
            rows_per_block: tiles_per_block * tile_rows,
            panels,
            panels_per_block: panels.div_ceil(panel_blocks).max(1),
        }
    }

    fn row_blocks(&self) -> usize {
        self.rows.div_ceil(self.rows_per_block)
    }

    fn tasks(&self) -> usize {
        self.row_blocks() * self.panels.div_ceil(self.panels_per_block)
    }

    /// Runs `work` on the rows and panels of every task, in parallel.
    fn run(&self, work: impl Fn(Range<usize>, Range<usize>) + Sync) {
        (0..self.tasks()).into_par_iter().for_each(|index| {
            let (rows, panels) = self.task(index);
            work(rows, panels);
        });
    }

    /// The rows and panels of task `index`.
    fn task(&self, index: usize) -> (Range<usize>, Range<usize>) {
        let (row_block, panel_block) = (index % self.row_blocks(), index / self.row_blocks());
        let first_row = row_block * self.rows_per_block;
        let first_panel = panel_block * self.panels_per_block;
        (
            first_row..(first_row + self.rows_per_block).min(self.rows),
            first_panel..(first_panel + self.panels_per_block).min(self.panels),
        )
    }
}
