//! The packed matrix multiply: weights laid out once in column panels, a
//! register-tiled microkernel that streams them, and a fused epilogue (bias,
//! residual, GELU) applied while the results are still in registers.
//!
//! A tile is `MR` rows × `2·LANES` columns: `2·MR` accumulators, two panel loads
//! and one broadcast per step of the inner dimension, which fits the 16 AVX2 (or
//! 32 AVX-512) registers. Each output element is one chain of fused multiply-adds
//! in the same order wherever its row and column sit, so a row's result never
//! depends on the other rows of the batch.

use std::ops::Range;

use crate::math::gelu;
use crate::vector::F32Vector;

/// The widest panel any instruction set uses (AVX-512: two registers of 16).
pub(crate) const MAX_PANEL_WIDTH: usize = 32;

/// How a stored weight becomes `f32` lanes.
///
/// # Safety
/// `load` must read exactly `V::LANES` elements.
pub(crate) unsafe trait PanelElement: Copy + Default + Send + Sync + 'static {
    /// The nearest value of this type to `value`.
    fn from_f32(value: f32) -> Self;
    /// `V::LANES` consecutive elements as `f32` lanes.
    unsafe fn load<V: F32Vector>(source: *const Self) -> V;
}

// SAFETY: V::load reads exactly LANES f32.
unsafe impl PanelElement for f32 {
    fn from_f32(value: f32) -> Self {
        value
    }
    #[inline(always)]
    unsafe fn load<V: F32Vector>(source: *const Self) -> V {
        // SAFETY: forwarded: the caller passes LANES readable elements.
        unsafe { V::load(source) }
    }
}

/// A bfloat16 weight: the top half of an `f32`, so widening is a shift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bf16(u16);

impl Bf16 {
    /// The value as `f32` (exact).
    pub(crate) fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }
}

// SAFETY: V::load_bf16 reads exactly LANES u16, and Bf16 is a bare u16.
unsafe impl PanelElement for Bf16 {
    /// Rounds to nearest, ties to even; NaN stays NaN.
    fn from_f32(value: f32) -> Self {
        if value.is_nan() {
            return Self(0x7FC0);
        }
        let bits = value.to_bits();
        let rounding = 0x7FFF + ((bits >> 16) & 1);
        Self((bits.wrapping_add(rounding) >> 16) as u16)
    }
    #[inline(always)]
    unsafe fn load<V: F32Vector>(source: *const Self) -> V {
        // SAFETY: forwarded: the caller passes LANES readable elements; Bf16 is
        // a u16 with the same layout.
        unsafe { V::load_bf16(source.cast()) }
    }
}

/// The right-hand operand laid out for the microkernel: column panels `width`
/// wide, each `depth × width` and row-major, the last one zero-padded.
#[derive(Debug, Clone)]
pub(crate) struct Panels<E> {
    data: Vec<E>,
    depth: usize,
    columns: usize,
    width: usize,
}

impl<E: PanelElement> Panels<E> {
    /// Packs the `depth × columns` matrix whose column `c` is `column(c)`
    /// (`depth` values), e.g. a PyTorch weight, whose rows are our columns.
    ///
    /// # Panics
    /// When a column is shorter than `depth`.
    pub(crate) fn from_columns<'a>(
        depth: usize,
        columns: usize,
        width: usize,
        column: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        let mut panels = Self::zeros(depth, columns, width);
        for index in 0..columns {
            let (panel, lane) = (index / width, index % width);
            let block = &mut panels.data[panel * depth * width..][..depth * width];
            for (slot, &value) in block
                .iter_mut()
                .skip(lane)
                .step_by(width)
                .zip(&column(index)[..depth])
            {
                *slot = E::from_f32(value);
            }
        }
        panels
    }

    /// Packs the `depth × columns` matrix whose row `d` is `row(d)` (`columns` values).
    ///
    /// # Panics
    /// When a row is shorter than `columns`.
    pub(crate) fn from_rows<'a>(
        depth: usize,
        columns: usize,
        width: usize,
        row: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        let mut panels = Self::zeros(depth, columns, width);
        for step in 0..depth {
            let values = &row(step)[..columns];
            for (panel, chunk) in values.chunks(width).enumerate() {
                let target = &mut panels.data[(panel * depth + step) * width..][..chunk.len()];
                for (slot, &value) in target.iter_mut().zip(chunk) {
                    *slot = E::from_f32(value);
                }
            }
        }
        panels
    }

    /// All-zero panels (the padding stays zero).
    fn zeros(depth: usize, columns: usize, width: usize) -> Self {
        Self {
            data: vec![E::default(); columns.div_ceil(width) * depth * width],
            depth,
            columns,
            width,
        }
    }

    /// Number of column panels.
    pub(crate) fn count(&self) -> usize {
        self.columns.div_ceil(self.width)
    }

    /// Rows of the packed matrix (the inner dimension of the multiply).
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// Columns of the packed matrix (before padding).
    pub(crate) fn columns(&self) -> usize {
        self.columns
    }

    /// Columns per panel.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// The packed element at `(d, c)`, for tests.
    #[cfg(test)]
    pub(crate) fn element(&self, depth: usize, column: usize) -> E {
        let panel = column / self.width;
        self.data[(panel * self.depth + depth) * self.width + column % self.width]
    }
}

/// The left operand: `count` rows of `depth` values, `stride` apart in `data`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'data> {
    pub(crate) data: &'data [f32],
    pub(crate) count: usize,
    pub(crate) depth: usize,
    pub(crate) stride: usize,
}

impl Rows<'_> {
    /// Whether every element the rows address lies inside `data`.
    pub(crate) fn in_bounds(&self) -> bool {
        self.count == 0 || (self.count - 1) * self.stride + self.depth <= self.data.len()
    }
}

/// Where results go: a row-major block `columns` wide, rows `stride` apart.
/// Threads share it and each writes its own tiles, so it is a raw pointer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Destination {
    pub(crate) start: *mut f32,
    pub(crate) columns: usize,
    pub(crate) stride: usize,
}

impl Destination {
    /// The whole of `output`, rows `columns` wide and packed.
    pub(crate) fn row_major(output: &mut [f32], columns: usize) -> Self {
        Self {
            start: output.as_mut_ptr(),
            columns,
            stride: columns,
        }
    }
}

// SAFETY: a Destination is only a place; the functions that write through it
// require that no two threads write the same element (each task owns its tiles).
unsafe impl Send for Destination {}
// SAFETY: as above.
unsafe impl Sync for Destination {}

/// What happens to each result before it is stored, in this order: `+ bias`
/// (per column, padded to whole panels), `+ residual` (same shape as the
/// destination, rows `columns` apart), then GELU.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epilogue<'data> {
    pub(crate) bias: Option<&'data [f32]>,
    pub(crate) residual: Option<&'data [f32]>,
    pub(crate) gelu: bool,
}

/// Most steps of the inner dimension per pass over a panel: the panel's slice
/// (`DEPTH_BLOCK × width`, 16 KB in f32 on AVX2) stays in L1 while every row tile
/// of the task streams past it; partial sums wait in the destination between
/// passes. The sums are f32 in registers or in memory alike, so the result is
/// the same bits as one pass. A panel's passes are made equal (384 steps are two
/// of 192), so that a pass's length is also how far ahead the next ones lie.
const DEPTH_BLOCK: usize = 256;

/// Bytes a prefetch brings in: one cache line.
const CACHE_LINE: usize = 64;

/// Which steps of the inner dimension one pass covers.
#[derive(Debug, Clone)]
struct Pass {
    steps: Range<usize>,
    /// Starts from zero (else from the partial sums in the destination).
    first: bool,
    /// Applies the epilogue and stores the results (else stores partial sums).
    last: bool,
}

/// One task's share of a multiply: the rows `row_range` of `rows` times the
/// panels `panel_range` of `panels` into `out`, epilogue included. One value,
/// so that the generic kernel, its per-instruction-set entry points and the
/// dispatcher pass it on without restating six parameters.
#[derive(Debug, Clone)]
pub(crate) struct Block<'data, E> {
    pub(crate) rows: Rows<'data>,
    pub(crate) panels: &'data Panels<E>,
    pub(crate) epilogue: &'data Epilogue<'data>,
    pub(crate) out: Destination,
    pub(crate) row_range: Range<usize>,
    pub(crate) panel_range: Range<usize>,
}

/// Computes `block`.
///
/// # Safety
/// The CPU has V's instruction set; `panels.width() == 2·V::LANES ≤
/// MAX_PANEL_WIDTH`; `rows.depth == panels.depth()` and `rows.in_bounds()`;
/// `out` is valid for reads and writes of `rows.count × panels.columns()`
/// elements that no other thread touches during the call; a bias covers every
/// panel, a residual every output element.
#[inline(always)]
pub(crate) unsafe fn multiply_block<V: F32Vector, E: PanelElement, const MR: usize>(
    block: Block<'_, E>,
) {
    let Block {
        rows,
        panels,
        epilogue,
        out,
        row_range,
        panel_range,
    } = block;
    let depth = rows.depth;
    let pass_length = depth.div_ceil(depth.div_ceil(DEPTH_BLOCK).max(1)).max(1);
    for panel in panel_range {
        let mut start = 0;
        loop {
            let end = (start + pass_length).min(depth);
            let pass = Pass {
                steps: start..end,
                first: start == 0,
                last: end == depth,
            };
            let mut first_row = row_range.start;
            while first_row < row_range.end {
                let count = MR.min(row_range.end - first_row);
                // The first tile of a pass reads its slice from memory; it asks
                // for a later pass's slice meanwhile, so that pass's first tile
                // finds it in L2.
                let prefetch = first_row == row_range.start;
                // SAFETY: forwarded contract; first_row + count ≤ row_range.end ≤ rows.count.
                unsafe {
                    tile::<V, E, MR>(
                        rows, first_row, count, panels, panel, &pass, prefetch, epilogue, out,
                    );
                }
                first_row += MR;
            }
            if pass.last {
                break;
            }
            start = end;
        }
    }
}

/// One pass of one `count × 2·LANES` tile (`count ≤ MR`): the rows past `count`
/// repeat the last real row, so the loop shape is fixed, and are never stored.
/// With `prefetch`, each step also asks for the panel data two passes ahead
/// (the passes of this panel and the next follow each other in memory), which
/// measured faster than one pass ahead: memory latency is longer than a pass.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the tile's coordinates, each needed
unsafe fn tile<V: F32Vector, E: PanelElement, const MR: usize>(
    rows: Rows<'_>,
    first_row: usize,
    count: usize,
    panels: &Panels<E>,
    panel: usize,
    pass: &Pass,
    prefetch: bool,
    epilogue: &Epilogue<'_>,
    out: Destination,
) {
    let width = 2 * V::LANES;
    let step_bytes = width * std::mem::size_of::<E>();
    let ahead = 2 * pass.steps.len() * width;
    let first_column = panel * width;
    let columns = width.min(out.columns - first_column);
    // SAFETY: (whole body) the contract of multiply_block. Row pointers address
    // rows < rows.count, read at steps < depth (in_bounds); the panel holds
    // depth × width elements; every load and store of partial sums or results
    // is inside out's rows × columns.
    unsafe {
        let mut row_starts = [rows.data.as_ptr(); MR];
        for (index, start) in row_starts.iter_mut().enumerate() {
            let row = first_row + index.min(count - 1);
            *start = rows.data.as_ptr().add(row * rows.stride);
        }
        let target = |index: usize| {
            out.start
                .add((first_row + index) * out.stride + first_column)
        };
        let mut sums = [[V::splat(0.0); 2]; MR];
        if !pass.first {
            for (index, sum) in sums.iter_mut().take(count).enumerate() {
                *sum = load_row(target(index), columns);
            }
        }
        let panel_start = panels.data.as_ptr().add(panel * rows.depth * width);
        for step in pass.steps.clone() {
            if prefetch {
                let next = panel_start
                    .add(step * width)
                    .wrapping_add(ahead)
                    .cast::<u8>();
                for line in (0..step_bytes).step_by(CACHE_LINE) {
                    V::prefetch(next.wrapping_add(line));
                }
            }
            let left = E::load::<V>(panel_start.add(step * width));
            let right = E::load::<V>(panel_start.add(step * width + V::LANES));
            for (sum, row_start) in sums.iter_mut().zip(&row_starts) {
                let value = V::splat(*row_start.add(step));
                sum[0] = value.mul_add(left, sum[0]);
                sum[1] = value.mul_add(right, sum[1]);
            }
        }
        for (index, sum) in sums.iter().take(count).enumerate() {
            let values = if pass.last {
                finish(
                    *sum,
                    first_row + index,
                    first_column,
                    columns,
                    out.columns,
                    epilogue,
                )
            } else {
                *sum
            };
            store(values, target(index), columns);
        }
    }
}

/// The epilogue on one row of a tile.
#[inline(always)]
pub(crate) unsafe fn finish<V: F32Vector>(
    mut values: [V; 2],
    row: usize,
    first_column: usize,
    columns: usize,
    row_width: usize,
    epilogue: &Epilogue<'_>,
) -> [V; 2] {
    // SAFETY: the contract of multiply_block: the bias covers whole panels and
    // the residual covers the destination; partial rows go through a padded copy.
    unsafe {
        if let Some(bias) = epilogue.bias {
            for (half, value) in values.iter_mut().enumerate() {
                *value = value.add(V::load(bias.as_ptr().add(first_column + half * V::LANES)));
            }
        }
        if let Some(residual) = epilogue.residual {
            let source = &residual[row * row_width + first_column..][..columns];
            let added: [V; 2] = load_row(source.as_ptr(), columns);
            for (value, add) in values.iter_mut().zip(added) {
                *value = value.add(add);
            }
        }
        if epilogue.gelu {
            // A loop, not `values.map(…)`: a closure would not inherit the entry
            // point's instruction set, and every vector operation in it would
            // become a function call.
            for value in &mut values {
                *value = gelu(*value);
            }
        }
    }
    values
}

/// Writes the first `columns` lanes of a tile row to `target`.
#[inline(always)]
pub(crate) unsafe fn store<V: F32Vector>(values: [V; 2], target: *mut f32, columns: usize) {
    // SAFETY: the caller passes `columns` writable elements at target.
    unsafe {
        if columns == 2 * V::LANES {
            values[0].store(target);
            values[1].store(target.add(V::LANES));
        } else {
            let mut staged = [0.0f32; MAX_PANEL_WIDTH];
            values[0].store(staged.as_mut_ptr());
            values[1].store(staged.as_mut_ptr().add(V::LANES));
            std::ptr::copy_nonoverlapping(staged.as_ptr(), target, columns);
        }
    }
}

/// Reads `columns` values at `source` as a tile row, zeros past them.
#[inline(always)]
unsafe fn load_row<V: F32Vector>(source: *const f32, columns: usize) -> [V; 2] {
    // SAFETY: the caller passes `columns` readable elements at source.
    unsafe {
        if columns == 2 * V::LANES {
            [V::load(source), V::load(source.add(V::LANES))]
        } else {
            let mut padded = [0.0f32; MAX_PANEL_WIDTH];
            std::ptr::copy_nonoverlapping(source, padded.as_mut_ptr(), columns);
            [
                V::load(padded.as_ptr()),
                V::load(padded.as_ptr().add(V::LANES)),
            ]
        }
    }
}
