//! bf16 weights and activations in the pair layout that both bf16 dot-product
//! units read: AMX's `TDPBF16PS` (`amx.rs`) and AVX512-BF16's `VDPBF16PS`
//! (`dot_bf16.rs`). Each multiplies bf16 values two depth steps at a time: a
//! 32-bit lane holds the values at depth `2p` and `2p + 1` side by side, and one
//! instruction adds both products to an f32 sum. The activations are rounded to
//! bf16 as the weights are; every sum is f32.
//!
//! Weights are packed once into blocks of 32 columns; a block is its depth in
//! steps of 32, and each step is two 1 KiB tiles (columns 0–15, then 16–31).
//! Row `p` of a tile holds, for each of its 16 columns, the pair of weights at
//! depth `2p` and `2p + 1`: one AMX tile, or one 512-bit register of
//! `VDPBF16PS` operand. Each task rounds its rows of activations into a bf16
//! copy, each row zero-padded to whole steps and the rows to whole tiles of 16
//! (those extra rows are never stored), so edges need no special case in the
//! inner loops.

use std::arch::x86_64::*;
use std::cell::Cell;
use std::ops::Range;

use crate::gemm::{self, Bf16, Destination, Epilogue, PanelElement, Rows};
use crate::vector::Avx512;

/// Rows of a tile, and the multiple the activations' rows are padded to.
pub(crate) const TILE_ROWS: usize = 16;
/// bf16 values in one 64-byte tile row: the depth one step covers.
pub(crate) const STEP_DEPTH: usize = 32;
/// Pairs of depth steps in one step: the rows of a weight tile.
pub(crate) const PAIRS_PER_STEP: usize = STEP_DEPTH / 2;
/// Columns of one weight tile (16 pairs in a 64-byte row).
pub(crate) const TILE_COLUMNS: usize = 16;
/// bf16 values in one tile (1 KiB).
pub(crate) const TILE_VALUES: usize = TILE_ROWS * STEP_DEPTH;
/// Columns of a packed block: two weight tiles, like an AVX-512 panel, so the
/// bias padding and the epilogue's tile rows are the same.
pub(crate) const BLOCK_COLUMNS: usize = 2 * TILE_COLUMNS;
const _: () = assert!(BLOCK_COLUMNS == gemm::MAX_PANEL_WIDTH);

/// A dense layer's weights in the pair layout (see the module's doc).
#[derive(Debug, Clone)]
pub(crate) struct PairPanels {
    data: Vec<Bf16>,
    depth: usize,
    columns: usize,
}

impl PairPanels {
    /// Packs the `depth × columns` matrix whose column `c` is `column(c)`
    /// (`depth` values), e.g. a PyTorch weight, whose rows are our columns.
    ///
    /// # Panics
    /// When a column is shorter than `depth`.
    pub(crate) fn from_columns<'a>(
        depth: usize,
        columns: usize,
        column: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        let steps = depth.div_ceil(STEP_DEPTH);
        let blocks = columns.div_ceil(BLOCK_COLUMNS);
        let mut data = vec![Bf16::default(); blocks * steps * 2 * TILE_VALUES];
        for index in 0..columns {
            let (block, within) = (index / BLOCK_COLUMNS, index % BLOCK_COLUMNS);
            let (tile, lane) = (within / TILE_COLUMNS, within % TILE_COLUMNS);
            for (d, &value) in column(index)[..depth].iter().enumerate() {
                let (step, pair, half) = (d / STEP_DEPTH, (d % STEP_DEPTH) / 2, d % 2);
                let tile_start = ((block * steps + step) * 2 + tile) * TILE_VALUES;
                data[tile_start + pair * STEP_DEPTH + lane * 2 + half] = Bf16::from_f32(value);
            }
        }
        Self {
            data,
            depth,
            columns,
        }
    }

    /// Rows of the packed matrix (the inner dimension of the multiply).
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// Columns of the packed matrix (before padding).
    pub(crate) fn columns(&self) -> usize {
        self.columns
    }

    /// Number of 32-column blocks.
    pub(crate) fn blocks(&self) -> usize {
        self.columns.div_ceil(BLOCK_COLUMNS)
    }

    /// Depth steps of 32 per block.
    pub(crate) fn steps(&self) -> usize {
        self.depth.div_ceil(STEP_DEPTH)
    }

    /// The first weight tile of `block`; the block's `steps()` pairs of tiles follow.
    pub(crate) fn block_start(&self, block: usize) -> *const Bf16 {
        self.data[block * self.steps() * 2 * TILE_VALUES..].as_ptr()
    }
}

/// One task's share: rows `row_range` of `rows` times the column blocks
/// `block_range` of `panels` into `out`, with `epilogue`.
///
/// The contract of the units that compute one (`amx::multiply`,
/// `dot_bf16::multiply`): `rows.depth == panels.depth()` and
/// `rows.in_bounds()`; `out` is valid for reads and writes of `rows.count ×
/// panels.columns()` elements, of which no other thread touches the task's
/// during the call; a bias covers every block, a residual every output element.
#[derive(Debug, Clone)]
pub(crate) struct Task<'data> {
    pub(crate) rows: Rows<'data>,
    pub(crate) panels: &'data PairPanels,
    pub(crate) epilogue: &'data Epilogue<'data>,
    pub(crate) out: Destination,
    pub(crate) row_range: Range<usize>,
    pub(crate) block_range: Range<usize>,
}

impl Task<'_> {
    /// The task's rows of activations rounded to bf16, or `None` when it has
    /// no rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512-BF16; `rows.in_bounds()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(crate) unsafe fn rounded_rows(&self) -> Option<Activations> {
        // SAFETY: forwarded contract.
        (!self.row_range.is_empty())
            .then(|| unsafe { Activations::round(self.rows, self.row_range.clone()) })
    }
}

thread_local! {
    /// Each thread's buffer for its tasks' rounded activations, kept from task
    /// to task: a fresh, zeroed one per task was part of what a bf16 pass spent
    /// in `memset` and page faults (`perf record`, see BENCHMARKS.md).
    static SCRATCH: Cell<Vec<Bf16>> = const { Cell::new(Vec::new()) };
}

/// One task's rows of activations rounded to bf16 in whole tiles: each row is
/// zero-padded to whole steps; the rows that pad the last tile hold whatever
/// the buffer held (a result row depends on its own activation row only, and
/// padding rows' results are never stored).
pub(crate) struct Activations {
    /// The thread's buffer, at least `padded_rows × stride` long; returned on drop.
    values: Vec<Bf16>,
    /// bf16 values per row (the depth, padded to whole steps).
    stride: usize,
}

impl Activations {
    /// Rounds rows `range` of `rows`, 32 values per instruction.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512-BF16; `rows.in_bounds()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(crate) unsafe fn round(rows: Rows<'_>, range: Range<usize>) -> Self {
        let stride = rows.depth.div_ceil(STEP_DEPTH) * STEP_DEPTH;
        let padded_rows = range.len().div_ceil(TILE_ROWS) * TILE_ROWS;
        let mut values = SCRATCH.take();
        if values.len() < padded_rows * stride {
            values.resize(padded_rows * stride, Bf16::default());
        }
        for (target, row) in values.chunks_exact_mut(stride.max(1)).zip(range) {
            let source = &rows.data[row * rows.stride..][..rows.depth];
            for (chunk, output) in source
                .chunks(STEP_DEPTH)
                .zip(target.chunks_exact_mut(STEP_DEPTH))
            {
                // Lanes past the row's end load as zero, the padding.
                let lanes = |skip: usize| {
                    let count = chunk.len().saturating_sub(skip).min(16);
                    ((1u32 << count) - 1) as __mmask16
                };
                // SAFETY: the masks keep the loads inside `chunk` (the lower
                // half reads its first 16 values, the upper half the rest), and
                // the store writes the 32 values of `output`. __m512bh and
                // __m512i are both 64 bytes of plain bits.
                unsafe {
                    let lower = _mm512_maskz_loadu_ps(lanes(0), chunk.as_ptr());
                    let upper = _mm512_maskz_loadu_ps(lanes(16), chunk.as_ptr().wrapping_add(16));
                    let rounded: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(upper, lower));
                    _mm512_storeu_si512(output.as_mut_ptr().cast(), rounded);
                }
            }
        }
        Self { values, stride }
    }

    /// The first value of row `row` (of the task's); every row up to the next
    /// multiple of 16 is in the buffer.
    pub(crate) fn row_start(&self, row: usize) -> *const Bf16 {
        self.values[row * self.stride..].as_ptr()
    }

    /// bf16 values per row (the depth, padded to whole steps).
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }
}

impl Drop for Activations {
    fn drop(&mut self) {
        SCRATCH.set(std::mem::take(&mut self.values));
    }
}

/// Applies the epilogue to row `row` of column block `block`'s sums and stores
/// the row's columns of the block in `out`.
///
/// # Safety
/// The CPU has AVX-512F; the bias covers the block, a residual covers `out`,
/// and `out`'s row `row` is valid for writes that no other thread makes.
#[inline(always)]
pub(crate) unsafe fn store_block_row(
    sum: [Avx512; 2],
    row: usize,
    block: usize,
    out: Destination,
    epilogue: &Epilogue<'_>,
) {
    let first_column = block * BLOCK_COLUMNS;
    let columns = BLOCK_COLUMNS.min(out.columns - first_column);
    // SAFETY: the contract; `columns` stops at the row's end.
    unsafe {
        let result = gemm::finish(sum, row, first_column, columns, out.columns, epilogue);
        gemm::store(
            result,
            out.start.add(row * out.stride + first_column),
            columns,
        );
    }
}
