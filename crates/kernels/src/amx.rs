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
//! The weights and the rounded activations are in the pair layout of
//! `bf16_pairs.rs`, whose tiles are AMX's.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::bf16_pairs::{Activations, BLOCK_COLUMNS, PairPanels, TILE_ROWS, Task, store_block_row};
use crate::gemm::Bf16;
use crate::vector::{Avx512, F32Vector};

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
    // SAFETY: `available()` held (the contract).
    let _config = unsafe { TileConfig::load() };
    let mut sums = [0.0f32; BLOCK_ROWS * BLOCK_COLUMNS];
    for block in block_range {
        for first in (0..row_range.len()).step_by(BLOCK_ROWS) {
            let count = BLOCK_ROWS.min(row_range.len() - first);
            // SAFETY: the activations hold whole tiles for every row from
            // `first` on (padded), the block holds `steps` pairs of tiles, and
            // `sums` is 32 × 32; the tile state was loaded above.
            unsafe { multiply_tiles(&activations, first, count, panels, block, &mut sums) };
            for index in 0..count {
                let values = &sums[index * BLOCK_COLUMNS..][..BLOCK_COLUMNS];
                // SAFETY: `values` holds two vectors; the contract of `multiply`
                // covers the bias, the residual and `out`'s row.
                unsafe {
                    let sum = [
                        Avx512::load(values.as_ptr()),
                        Avx512::load(values.as_ptr().add(Avx512::LANES)),
                    ];
                    store_block_row(sum, row_range.start + first + index, block, out, epilogue);
                }
            }
        }
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
/// tiles of rows from `first`, each `panels.steps()` steps deep.
unsafe fn multiply_tiles(
    activations: &Activations,
    first: usize,
    count: usize,
    panels: &PairPanels,
    block: usize,
    sums: &mut [f32; BLOCK_ROWS * BLOCK_COLUMNS],
) {
    let steps = panels.steps();
    if steps == 0 {
        sums.fill(0.0);
        return;
    }
    let row_bytes = activations.stride() * std::mem::size_of::<Bf16>();
    let sum_row_bytes = BLOCK_COLUMNS * std::mem::size_of::<f32>();
    let left = activations.row_start(first);
    let weights = panels.block_start(block);
    let out = sums.as_mut_ptr();
    // Each step: load the activation tile(s) and both weight panels, multiply
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
