//! The bf16 dense layer on AVX512-BF16's `VDPBF16PS`, for CPUs that have it but
//! not AMX (AMD Zen 4 and later, Intel Cooper Lake): each instruction multiplies
//! 16 pairs of bf16 activations by 16 pairs of bf16 weights and adds both
//! products to 16 f32 sums, twice the arithmetic of an f32 FMA in the same
//! register width; on the Zen machine of BENCHMARKS.md it also issues as often.
//! (On Intel's Xeons with AMX it runs at half the FMA rate, which is why AMX, not
//! this, serves bf16 there.)
//!
//! The operands are those of `bf16_pairs.rs`: a 32-bit lane of a weight tile's
//! row is one column's pair of weights, so one step of the loop below broadcasts
//! a row's pair of activations and multiplies it with two 64-byte rows of
//! weights (columns 0–15 and 16–31 of the block). A tile of up to eight rows ×
//! 32 columns keeps its sums in 16 registers.

use std::arch::x86_64::*;

use crate::bf16_pairs::{
    Activations, PAIRS_PER_STEP, PairPanels, STEP_DEPTH, TILE_VALUES, Task, store_block_row,
};
use crate::vector::{Avx512, F32Vector};

/// Most rows of one register tile: 16 sums, 2 weight rows and a broadcast
/// leave room to spare in the 32 registers.
pub(crate) const TILE_ROWS: usize = 8;

/// How far ahead of its loads the tile that streams a block's weights from
/// memory prefetches them into L2: four steps (8 KiB; eight measured the
/// same). Without it the loads wait on memory at every 4 KiB page, where the
/// hardware's prefetchers stop. On the Zen 4 of BENCHMARKS.md, where one pass
/// streams 21 MB of bf16 weights, it took batch 1 (15 tokens) from a median
/// of 1.9–2.6 ms to 1.4–2.0 (into L1 instead of L2 measured no better).
const PREFETCH_AHEAD: usize = 4 * 2 * TILE_VALUES;

/// Whether this CPU runs `VDPBF16PS` (and the AVX-512F around it).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// Computes `task`.
///
/// # Safety
/// [`available`] returned true, and `task` keeps the contract of [`Task`].
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
pub(crate) unsafe fn multiply(task: Task<'_>) {
    // SAFETY: `available()` checked AVX-512-BF16; the rows are in bounds.
    let Some(activations) = (unsafe { task.rounded_rows() }) else {
        return;
    };
    let Task {
        panels,
        epilogue,
        out,
        row_range,
        block_range,
        ..
    } = task;
    let mut sums = [[Avx512(_mm512_setzero_ps()); 2]; TILE_ROWS];
    for block in block_range {
        for first in (0..row_range.len()).step_by(TILE_ROWS) {
            let count = TILE_ROWS.min(row_range.len() - first);
            // A tile only as tall as the rows it has, so batch 1 does not
            // compute eight rows to keep one. The block's first tile reads
            // its weights from memory, and prefetches them; the later ones
            // find them in cache.
            // SAFETY: the activations hold every row up to the next multiple
            // of 16 past `first`, and the block `panels.steps()` steps.
            unsafe {
                if first == 0 {
                    tile_of::<true>(count, &activations, first, panels, block, &mut sums);
                } else {
                    tile_of::<false>(count, &activations, first, panels, block, &mut sums);
                }
            }
            for (index, &sum) in sums.iter().take(count).enumerate() {
                // SAFETY: the contract of `multiply` covers the bias, the
                // residual and `out`'s row, one of the task's.
                unsafe {
                    store_block_row(sum, row_range.start + first + index, block, out, epilogue)
                };
            }
        }
    }
}

/// [`tile`] as tall as `count` rows need (1, 2, 4 or 8). Each row's sums are
/// the same chain of instructions whatever the tile's height.
///
/// # Safety
/// That of [`tile`] for `count` rows, `count ≤ TILE_ROWS`.
#[inline(always)]
unsafe fn tile_of<const STREAMS: bool>(
    count: usize,
    activations: &Activations,
    first: usize,
    panels: &PairPanels,
    block: usize,
    sums: &mut [[Avx512; 2]; TILE_ROWS],
) {
    // SAFETY: forwarded; each height covers `count` rows.
    unsafe {
        match count {
            1 => tile::<1, STREAMS>(activations, first, panels, block, sums),
            2 => tile::<2, STREAMS>(activations, first, panels, block, sums),
            3 | 4 => tile::<4, STREAMS>(activations, first, panels, block, sums),
            _ => tile::<TILE_ROWS, STREAMS>(activations, first, panels, block, sums),
        }
    }
}

/// Rows `first..first + ROWS` of the activations times column block `block`,
/// into the first `ROWS` rows of `sums`; `STREAMS` when the weights come from
/// memory, which the tile then prefetches `PREFETCH_AHEAD` ahead of its loads.
///
/// # Safety
/// The CPU has AVX512-BF16; the activations hold rows `first..first + ROWS`,
/// each `panels.steps()` steps deep; `ROWS ≤ TILE_ROWS`.
#[inline(always)]
unsafe fn tile<const ROWS: usize, const STREAMS: bool>(
    activations: &Activations,
    first: usize,
    panels: &PairPanels,
    block: usize,
    sums: &mut [[Avx512; 2]; TILE_ROWS],
) {
    // SAFETY: (whole body) the contract: each row pointer reads the row's
    // `steps × 16` pairs; each weight load reads one 64-byte row of the
    // block's `steps` pairs of tiles. __m512bh, __m512i and __m512 are all 64
    // bytes of plain bits.
    unsafe {
        let row_pairs: [*const u32; ROWS] =
            std::array::from_fn(|index| activations.row_start(first + index).cast());
        let mut tile_sums = [[_mm512_setzero_ps(); 2]; ROWS];
        let mut weights = panels.block_start(block);
        for step in 0..panels.steps() {
            for pair in 0..PAIRS_PER_STEP {
                // A prefetch never faults, and `wrapping_add` keeps an
                // address past the panels defined.
                if STREAMS {
                    let ahead = weights.wrapping_add(PREFETCH_AHEAD + pair * STEP_DEPTH);
                    Avx512::prefetch(ahead.cast());
                    Avx512::prefetch(ahead.wrapping_add(TILE_VALUES).cast());
                }
                let lower: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(weights.add(pair * STEP_DEPTH).cast()));
                let upper: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                    weights.add(TILE_VALUES + pair * STEP_DEPTH).cast(),
                ));
                let index = step * PAIRS_PER_STEP + pair;
                for (sum, row) in tile_sums.iter_mut().zip(&row_pairs) {
                    let activation: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                        row.add(index).read_unaligned() as i32,
                    ));
                    sum[0] = _mm512_dpbf16_ps(sum[0], activation, lower);
                    sum[1] = _mm512_dpbf16_ps(sum[1], activation, upper);
                }
            }
            weights = weights.add(2 * TILE_VALUES);
        }
        for (target, sum) in sums.iter_mut().zip(tile_sums) {
            *target = [Avx512(sum[0]), Avx512(sum[1])];
        }
    }
}
