//! Which instruction set the kernels run on, chosen at run time, and one
//! `#[target_feature]` entry point per kernel and instruction set: the generic
//! kernels are inlined into each, which is what turns them into AVX-512 or AVX2
//! code in one binary that still runs on any x86-64 (or other) CPU.

use crate::attention::HeadSlice;
use crate::gemm::{Block, Destination, PanelElement};

/// An instruction set the kernels are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 16 lanes, 8 × 32 tiles.
    Avx512,
    /// AVX2 with FMA: 8 lanes, 6 × 16 tiles.
    Avx2Fma,
    /// NEON (every aarch64 CPU): 4 lanes, 8 × 8 tiles.
    Neon,
    /// Any other CPU: the `gemm` crate for the dense layers, scalar code for the rest.
    Portable,
}

impl Isa {
    /// Every instruction set this CPU runs, best first; `Portable` is always last.
    pub fn supported() -> Vec<Self> {
        [Self::Avx512, Self::Avx2Fma, Self::Neon, Self::Portable]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The best instruction set this CPU runs.
    pub fn detect() -> Self {
        Self::supported().first().copied().unwrap_or(Self::Portable)
    }

    /// Whether this CPU runs `self`.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Self::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            Self::Portable => true,
            // The instruction sets of other architectures.
            _ => false,
        }
    }

    /// A short name for logs and `/ready`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512f",
            Self::Avx2Fma => "avx2+fma",
            Self::Neon => "neon",
            Self::Portable => "portable",
        }
    }

    /// Columns per weight panel: two registers.
    pub(crate) fn panel_width(self) -> usize {
        match self {
            Self::Avx512 => 32,
            Self::Avx2Fma => 16,
            Self::Neon => 8,
            Self::Portable => 2,
        }
    }

    /// Rows per microkernel tile.
    pub(crate) fn tile_rows(self) -> usize {
        match self {
            Self::Avx512 => 8,
            Self::Avx2Fma => 6,
            Self::Neon => 8,
            Self::Portable => 4,
        }
    }
}

/// Generates the entry points of one instruction set: each forwards to the
/// generic kernel with the vector type and tile height fixed, under `$features`.
macro_rules! entry_points {
    ($module:ident, $vector:ty, $tile_rows:literal $(, $features:literal)?) => {
        mod $module {
            use super::*;

            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn multiply_block<E: PanelElement>(block: Block<'_, E>) {
                // SAFETY: forwarded; the caller checked the instruction set.
                unsafe { crate::gemm::multiply_block::<$vector, E, $tile_rows>(block) }
            }

            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn attend(qkv: &[f32], slice: HeadSlice, context: Destination) {
                // SAFETY: forwarded; the caller checked the instruction set.
                unsafe { crate::attention::attend::<$vector, $tile_rows>(qkv, slice, context) }
            }

            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn layer_norm_rows(
                rows: &mut [f32],
                scale: &[f32],
                shift: &[f32],
                eps: f32,
            ) {
                for row in rows.chunks_exact_mut(scale.len()) {
                    // SAFETY: forwarded; the caller checked the instruction set.
                    unsafe { crate::math::layer_norm::<$vector>(row, scale, shift, eps) }
                }
            }

            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn gelu_in_place(values: &mut [f32]) {
                // SAFETY: forwarded; the caller checked the instruction set.
                unsafe { crate::math::gelu_in_place::<$vector>(values) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
entry_points!(avx512, crate::vector::Avx512, 8, "avx512f,avx2,fma");
#[cfg(target_arch = "x86_64")]
entry_points!(avx2, crate::vector::Avx2, 6, "avx2,fma");
#[cfg(target_arch = "aarch64")]
entry_points!(neon, crate::vector::Neon, 8, "neon");
entry_points!(portable, crate::vector::Scalar, 4);

/// Picks the entry point of `$isa` and calls `$function` with `$arguments`.
macro_rules! dispatch {
    ($isa:expr, $function:ident($($argument:expr),* $(,)?)) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::$function($($argument),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => avx2::$function($($argument),*),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::$function($($argument),*),
            _ => portable::$function($($argument),*),
        }
    };
}

/// [`crate::gemm::multiply_block`] on `isa`.
///
/// # Safety
/// `isa.is_supported()`, `block.panels.width() == isa.panel_width()`, and the
/// contract of [`crate::gemm::multiply_block`].
pub(crate) unsafe fn multiply_block<E: PanelElement>(isa: Isa, block: Block<'_, E>) {
    // SAFETY: forwarded contract.
    unsafe { dispatch!(isa, multiply_block(block)) }
}

/// [`crate::attention::attend`] on `isa`.
///
/// # Safety
/// `isa.is_supported()` and the contract of [`crate::attention::attend`].
pub(crate) unsafe fn attend(isa: Isa, qkv: &[f32], slice: HeadSlice, context: Destination) {
    // SAFETY: forwarded contract.
    unsafe { dispatch!(isa, attend(qkv, slice, context)) }
}

/// The layer norm of each `scale.len()`-wide row of `rows`, on `isa`.
///
/// # Safety
/// `isa.is_supported()`.
pub(crate) unsafe fn layer_norm_rows(
    isa: Isa,
    rows: &mut [f32],
    scale: &[f32],
    shift: &[f32],
    eps: f32,
) {
    // SAFETY: forwarded contract.
    unsafe { dispatch!(isa, layer_norm_rows(rows, scale, shift, eps)) }
}

/// GELU of every element, on `isa`.
///
/// # Safety
/// `isa.is_supported()`.
pub(crate) unsafe fn gelu_in_place(isa: Isa, values: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { dispatch!(isa, gelu_in_place(values)) }
}
