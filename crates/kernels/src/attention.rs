//! Self-attention of one head of one sequence, over that sequence's tokens only
//! (which is exactly the padding mask): `softmax(Q·Kᵀ/√d)·V`.
//!
//! Both products run on the packed microkernel. The keys and values of a head
//! are a few kilobytes, packed per call; the score matrix stays in cache between
//! the two products, and the result is written straight into its place in the
//! concatenated context.

use crate::gemm::{Block, Destination, Epilogue, Panels, Rows, multiply_block};
use crate::math::softmax;
use crate::vector::F32Vector;

/// Where one head of one sequence lives in the fused `tokens × 3·hidden` QKV
/// matrix (rows `[start, start + length)`, query | key | value column blocks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadSlice {
    pub(crate) start: usize,
    pub(crate) length: usize,
    pub(crate) head: usize,
    pub(crate) head_size: usize,
    pub(crate) hidden: usize,
}

impl HeadSlice {
    /// Offset in `qkv` of this head's first element of `part` (0 query, 1 key, 2 value).
    fn offset(&self, part: usize) -> usize {
        self.start * 3 * self.hidden + part * self.hidden + self.head * self.head_size
    }
}

/// Attends one head of one sequence and writes its `length × head_size` output
/// into `context` (`tokens × hidden`) at its rows and its head's columns.
///
/// # Safety
/// The CPU has V's instruction set; `qkv` holds `(start + length) × 3·hidden`
/// elements; `context` is valid for writes of the rows and columns named, which
/// no other thread touches during the call.
#[inline(always)]
pub(crate) unsafe fn attend<V: F32Vector, const MR: usize>(
    qkv: &[f32],
    slice: HeadSlice,
    context: Destination,
) {
    let width = 2 * V::LANES;
    let stride = 3 * slice.hidden;
    let (length, head_size) = (slice.length, slice.head_size);
    let row = |part: usize, token: usize| &qkv[slice.offset(part) + token * stride..][..head_size];
    // Kᵀ: the keys' rows are the columns of the right operand; V as it is.
    let keys = Panels::<f32>::from_columns(head_size, length, width, |token| row(1, token));
    let values = Panels::<f32>::from_rows(length, head_size, width, |token| row(2, token));
    let queries = Rows {
        data: &qkv[slice.offset(0)..],
        count: length,
        depth: head_size,
        stride,
    };
    let mut scores = vec![0.0f32; length * length];
    let scores_place = Destination::row_major(&mut scores, length);
    let none = Epilogue::default();
    // SAFETY: the caller's instruction set; `queries` lies inside qkv (its last
    // row ends at offset(0) + (length-1)·stride + head_size ≤ qkv.len()); the
    // score buffer is ours, length × length.
    unsafe {
        multiply_block::<V, f32, MR>(Block {
            rows: queries,
            panels: &keys,
            epilogue: &none,
            out: scores_place,
            row_range: 0..length,
            panel_range: 0..keys.count(),
        })
    };
    let scale = 1.0 / (head_size as f32).sqrt();
    for row in scores.chunks_exact_mut(length) {
        // SAFETY: the caller's instruction set.
        unsafe { softmax::<V>(row, scale) };
    }
    let probabilities = Rows {
        data: &scores,
        count: length,
        depth: length,
        stride: length,
    };
    let output = Destination {
        // SAFETY: the caller guarantees these rows and columns of context are
        // ours, so the offset stays inside its allocation.
        start: unsafe {
            context
                .start
                .add(slice.start * context.stride + slice.head * head_size)
        },
        columns: head_size,
        stride: context.stride,
    };
    // SAFETY: the caller's instruction set and context rows; `probabilities` is
    // the length × length score buffer.
    unsafe {
        multiply_block::<V, f32, MR>(Block {
            rows: probabilities,
            panels: &values,
            epilogue: &none,
            out: output,
            row_range: 0..length,
            panel_range: 0..values.count(),
        })
    };
}
