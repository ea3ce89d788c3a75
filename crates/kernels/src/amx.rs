//! The dense layer on Intel AMX, the tile matrix unit of Xeon CPUs since
//! Sapphire Rapids, for bf16 weights: `TDPBF16PS` multiplies a 16 × 32 bf16 tile
//! of activations by a 32 × 16 bf16 tile of weights into 16 × 16 f32 sums, about
//! fifteen times the arithmetic of AVX-512 FMAs per cycle (measured here, see
//! BENCHMARKS.md). The activations are rounded to bf16 as the weights are; every
//! sum is f32.
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline
//! assembly, each block self-contained: the compiler never uses tile registers,
//! so they hold what this module put there between the blocks of one task.
//! Linux hands AMX's 8 KiB of register state to a process only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which [`available`] does once.
//!
//! Layouts. Weights are packed once into blocks of 32 columns; a block is its
//! depth in steps of 32, and each step is two 1 KiB weight tiles (columns 0–15,
//! then 16–31) in AMX's pair layout: tile row `r` holds, for each of its 16
//! columns, the weights at depth `2r` and `2r + 1` side by side. Each task rounds
//! its rows of activations into a bf16 copy in whole tiles of 16 rows and 32
//! depth steps (the depth zero-padded, the extra rows never stored), so edges
//! need no special case in the assembly.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::ops::Range;
use std::sync::OnceLock;

use crate::gemm::{self, Bf16, Destination, Epilogue, PanelElement, Rows};
use crate::vector::{Avx512, F32Vector};

/// Rows of a tile (and of the activations one tile multiplies).
const TILE_ROWS: usize = 16;
/// bf16 values in one 64-byte tile row: the depth one step covers.
const STEP_DEPTH: usize = 32;
/// Columns of one weight tile (16 pairs in a 64-byte row).
const TILE_COLUMNS: usize = 16;
/// bf16 values in one tile (1 KiB).
const TILE_VALUES: usize = TILE_ROWS * STEP_DEPTH;
/// Columns of a packed block: two weight tiles, like an AVX-512 panel, so the
/// bias padding and the epilogue's tile rows are the same.
const BLOCK_COLUMNS: usize = 2 * TILE_COLUMNS;
const _: () = assert!(BLOCK_COLUMNS == gemm::MAX_PANEL_WIDTH);
/// Rows of the largest block of results one assembly block computes (2 × 2 tiles).
pub(crate) const BLOCK_ROWS: usize = 2 * TILE_ROWS;

/// Whether AMX with bf16 runs here and Linux granted this process its tile
/// state; the answer is found once.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_has_amx_bf16() && request_tile_state())
}

/// AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), and the AVX-512
/// this module's epilogue and conversions use.
fn cpu_has_amx_bf16() -> bool {
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16"))
    {
        return false;
    }
    // Leaf 7 exists on every CPU with AVX-512 (checked above).
    let features = __cpuid_count(7, 0);
    let (amx_bf16, amx_tile) = (1 << 22, 1 << 24);
    features.edx & (amx_bf16 | amx_tile) == amx_bf16 | amx_tile
}

/// Asks Linux for the tile data state; false where the kernel refuses (before
/// 5.16, or where it is switched off).
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which register state
    // the kernel lets this process use; it reads and writes no memory of ours.
    let status = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    status == 0
}

/// A dense layer's weights in AMX's layout (see the module's doc).
#[derive(Debug, Clone)]
pub(crate) struct Tiles {
    data: Vec<Bf16>,
    depth: usize,
    columns: usize,
}

impl Tiles {
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
    fn steps(&self) -> usize {
        self.depth.div_ceil(STEP_DEPTH)
    }

    /// The first weight tile of `block`.
    fn block_start(&self, block: usize) -> *const Bf16 {
        self.data[block * self.steps() * 2 * TILE_VALUES..].as_ptr()
    }
}

/// One task's share: rows `row_range` of `rows` times the column blocks
/// `block_range` of `tiles` into `out`, with `epilogue`.
#[derive(Debug, Clone)]
pub(crate) struct Task<'data> {
    pub(crate) rows: Rows<'data>,
    pub(crate) tiles: &'data Tiles,
    pub(crate) epilogue: &'data Epilogue<'data>,
    pub(crate) out: Destination,
    pub(crate) row_range: Range<usize>,
    pub(crate) block_range: Range<usize>,
}

/// Computes `task`.
///
/// # Safety
/// [`available`] returned true; `rows.depth == tiles.depth()` and
/// `rows.in_bounds()`; `out` is valid for reads and writes of `rows.count ×
/// tiles.columns()` elements that no other thread touches during the call; a
/// bias covers every block, a residual every output element.
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
pub(crate) unsafe fn multiply(task: Task<'_>) {
    let Task {
        rows,
        tiles,
        epilogue,
        out,
        row_range,
        block_range,
    } = task;
    if row_range.is_empty() {
        return;
    }
    // SAFETY: `available()` checked AVX-512-BF16; the rows are in bounds.
    let activations = unsafe { Activations::round(rows, row_range.clone()) };
    // SAFETY: `available()` held (the contract).
    let _config = unsafe { TileConfig::load() };
    let mut sums = [0.0f32; BLOCK_ROWS * BLOCK_COLUMNS];
    for block in block_range {
        let first_column = block * BLOCK_COLUMNS;
        let columns = BLOCK_COLUMNS.min(out.columns - first_column);
        for first in (0..row_range.len()).step_by(BLOCK_ROWS) {
            let count = BLOCK_ROWS.min(row_range.len() - first);
            // SAFETY: the activations hold whole tiles for every row from
            // `first` on (padded), the block holds `steps` pairs of tiles, and
            // `sums` is 32 × 32; the tile state was loaded above.
            unsafe { multiply_tiles(&activations, first, count, tiles, block, &mut sums) };
            for index in 0..count {
                let row = row_range.start + first + index;
                let values = &sums[index * BLOCK_COLUMNS..][..BLOCK_COLUMNS];
                // SAFETY: `values` holds two vectors; the contract of `multiply`
                // covers the bias, the residual and `out`'s row `row`, columns
                // `first_column..+columns`.
                unsafe {
                    let sum = [
                        Avx512::load(values.as_ptr()),
                        Avx512::load(values.as_ptr().add(Avx512::LANES)),
                    ];
                    let result =
                        gemm::finish(sum, row, first_column, columns, out.columns, epilogue);
                    let target = out.start.add(row * out.stride + first_column);
                    gemm::store(result, target, columns);
                }
            }
        }
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
struct Activations {
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
    unsafe fn round(rows: Rows<'_>, range: Range<usize>) -> Self {
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

    /// The first value of row `row` (of the task's).
    fn row_start(&self, row: usize) -> *const Bf16 {
        self.values[row * self.stride..].as_ptr()
    }
}

impl Drop for Activations {
    fn drop(&mut self) {
        SCRATCH.set(std::mem::take(&mut self.values));
    }
}

/// The tile shapes every block uses: all eight tiles 16 rows × 64 bytes. Loaded
/// for the life of the value, released on drop, so no tile state outlives a task.
struct TileConfig;

impl TileConfig {
    /// # Safety
    /// [`available`] returned true.
    unsafe fn load() -> Self {
        let mut config = [0u8; 64];
        config[0] = 1; // palette 1: eight tiles of up to 16 rows × 64 bytes
        for tile in 0..8 {
            config[16 + 2 * tile] = 64; // bytes per row (little-endian u16)
            config[48 + tile] = TILE_ROWS as u8;
        }
        // SAFETY: `available()` held (the contract) and the configuration is
        // a valid palette-1 layout of 64 bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.as_ptr(), options(nostack, readonly)) };
        Self
    }
}

impl Drop for TileConfig {
    fn drop(&mut self) {
        // SAFETY: the configuration was loaded by `load`.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Sums of rows `first..first + count` (`count ≤ 32`) of the activations times
/// column block `block` into `sums` (32 rows × 32 columns, row-major; the rows
/// past `count` are padding or the second tile is not computed).
///
/// # Safety
/// The tile configuration is loaded; the activations hold `⌈count/16⌉` whole
/// tiles of rows from `first`, each `tiles.steps()` steps deep.
unsafe fn multiply_tiles(
    activations: &Activations,
    first: usize,
    count: usize,
    tiles: &Tiles,
    block: usize,
    sums: &mut [f32; BLOCK_ROWS * BLOCK_COLUMNS],
) {
    let steps = tiles.steps();
    if steps == 0 {
        sums.fill(0.0);
        return;
    }
    let row_bytes = activations.stride * std::mem::size_of::<Bf16>();
    let sum_row_bytes = BLOCK_COLUMNS * std::mem::size_of::<f32>();
    let left = activations.row_start(first);
    let weights = tiles.block_start(block);
    let out = sums.as_mut_ptr();
    // Each step: load the activation tile(s) and both weight tiles, multiply
    // into the sums; the pointers advance 64 bytes (activations) and 2 KiB
    // (weights) a step. tmm0/tmm1 are rows 0–15, tmm2/tmm3 rows 16–31, each
    // pair columns 0–15 and 16–31.
    // SAFETY: (both blocks) the loads stay inside the activations' tiles and
    // the block's `steps` pairs of weight tiles; the stores write the 32 × 32
    // (or 16 × 32) sums; the loop runs `steps ≥ 1` times.
    unsafe {
        if count > TILE_ROWS {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [{left} + {row_bytes}*1]",
                "tileloadd tmm5, [{lower} + {row_bytes}*1]",
                "tileloadd tmm6, [{weights} + {tile_row}*1]",
                "tileloadd tmm7, [{weights} + {tile_row}*1 + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {left}, 64",
                "add {lower}, 64",
                "add {weights}, 2048",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{out} + {sum_row}*1], tmm0",
                "tilestored [{out} + {sum_row}*1 + 64], tmm1",
                "tilestored [{lower_out} + {sum_row}*1], tmm2",
                "tilestored [{lower_out} + {sum_row}*1 + 64], tmm3",
                left = inout(reg) left => _,
                lower = inout(reg) left.cast::<u8>().add(TILE_ROWS * row_bytes) => _,
                weights = inout(reg) weights => _,
                steps = inout(reg) steps => _,
                row_bytes = in(reg) row_bytes,
                tile_row = in(reg) 64usize,
                out = in(reg) out,
                lower_out = in(reg) out.cast::<u8>().add(TILE_ROWS * sum_row_bytes),
                sum_row = in(reg) sum_row_bytes,
                options(nostack),
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "2:",
                "tileloadd tmm4, [{left} + {row_bytes}*1]",
                "tileloadd tmm6, [{weights} + {tile_row}*1]",
                "tileloadd tmm7, [{weights} + {tile_row}*1 + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "add {left}, 64",
                "add {weights}, 2048",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{out} + {sum_row}*1], tmm0",
                "tilestored [{out} + {sum_row}*1 + 64], tmm1",
                left = inout(reg) left => _,
                weights = inout(reg) weights => _,
                steps = inout(reg) steps => _,
                row_bytes = in(reg) row_bytes,
                tile_row = in(reg) 64usize,
                out = in(reg) out,
                sum_row = in(reg) sum_row_bytes,
                options(nostack),
            );
        }
    }
}
