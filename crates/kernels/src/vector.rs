//! One SIMD register of `f32` lanes behind a trait, so that each kernel is written
//! once, generically, and compiled once per instruction set inside a
//! `#[target_feature]` entry point (see `isa.rs`).
//!
//! Every method is `#[inline(always)]`: the generic kernels only become real SIMD
//! code once they are inlined into an entry point that enables the features.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The vector operations the kernels need.
///
/// # Safety
/// Implementations promise that `load` and `store` touch exactly `LANES`
/// consecutive `f32`s, and that every method computes what its name says lane by
/// lane (the kernels' bounds arithmetic relies on `LANES`). Callers of the
/// methods must make sure the CPU has the implementation's instruction set.
pub(crate) unsafe trait F32Vector: Copy {
    /// Lanes per register.
    const LANES: usize;

    /// Every lane `value`.
    unsafe fn splat(value: f32) -> Self;
    /// `LANES` values from `source` (no alignment needed).
    unsafe fn load(source: *const f32) -> Self;
    /// `LANES` values from bfloat16 bits at `source`, widened exactly to `f32`.
    unsafe fn load_bf16(source: *const u16) -> Self;
    /// Writes the lanes to `target` (no alignment needed).
    unsafe fn store(self, target: *mut f32);
    /// `self + other`.
    unsafe fn add(self, other: Self) -> Self;
    /// `self - other`.
    unsafe fn sub(self, other: Self) -> Self;
    /// `self · other`.
    unsafe fn mul(self, other: Self) -> Self;
    /// `self / other`.
    unsafe fn div(self, other: Self) -> Self;
    /// `self · factor + addend` with one rounding.
    unsafe fn mul_add(self, factor: Self, addend: Self) -> Self;
    /// The larger of each pair.
    unsafe fn max(self, other: Self) -> Self;
    /// The smaller of each pair.
    unsafe fn min(self, other: Self) -> Self;
    /// `|self|`.
    unsafe fn abs(self) -> Self;
    /// `self`'s magnitude with `sign`'s sign.
    unsafe fn with_sign_of(self, sign: Self) -> Self;
    /// Rounded to the nearest integer (ties to even).
    unsafe fn round(self) -> Self;
    /// `2ⁿ` for lanes holding an integer `n` in `[-126, 127]`.
    unsafe fn exp2_of_integer(self) -> Self;
    /// The sum of the lanes.
    unsafe fn reduce_sum(self) -> f32;
    /// The largest lane.
    unsafe fn reduce_max(self) -> f32;
    /// Asks for the cache line holding `address` to be brought into L2, for
    /// data a kernel reads soon. A hint: it never faults and has no effect on
    /// results, so `address` may lie past an allocation. Without a prefetch
    /// instruction it does nothing.
    #[inline(always)]
    unsafe fn prefetch(address: *const u8) {
        let _ = address;
    }
}

/// One lane in a plain `f32`: the portable build of the generic kernels, and
/// the tail of a row that is not a whole number of registers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar(f32);

// SAFETY: load and store touch exactly one f32; every method is plain Rust
// arithmetic that any CPU runs.
unsafe impl F32Vector for Scalar {
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        Self(value)
    }
    #[inline(always)]
    unsafe fn load(source: *const f32) -> Self {
        // SAFETY: the caller passes a pointer to one readable f32.
        Self(unsafe { source.read_unaligned() })
    }
    #[inline(always)]
    unsafe fn load_bf16(source: *const u16) -> Self {
        // SAFETY: the caller passes a pointer to one readable u16.
        let bits = unsafe { source.read_unaligned() };
        Self(f32::from_bits(u32::from(bits) << 16))
    }
    #[inline(always)]
    unsafe fn store(self, target: *mut f32) {
        // SAFETY: the caller passes a pointer to one writable f32.
        unsafe { target.write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Self(self.0 + other.0)
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        Self(self.0 - other.0)
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        Self(self.0 * other.0)
    }
    #[inline(always)]
    unsafe fn div(self, other: Self) -> Self {
        Self(self.0 / other.0)
    }
    #[inline(always)]
    unsafe fn mul_add(self, factor: Self, addend: Self) -> Self {
        Self(self.0.mul_add(factor.0, addend.0))
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        Self(self.0.max(other.0))
    }
    #[inline(always)]
    unsafe fn min(self, other: Self) -> Self {
        Self(self.0.min(other.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Self(self.0.abs())
    }
    #[inline(always)]
    unsafe fn with_sign_of(self, sign: Self) -> Self {
        Self(self.0.copysign(sign.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Self(self.0.round_ties_even())
    }
    #[inline(always)]
    unsafe fn exp2_of_integer(self) -> Self {
        // The caller keeps n in [-126, 127], so the biased exponent is in [1, 254].
        let biased = (self.0 as i32 + 127) as u32;
        Self(f32::from_bits(biased << 23))
    }
    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        self.0
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        self.0
    }
}

/// Eight lanes in a 256-bit AVX register; needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2(__m256);

// Every method is unsafe for the reasons of the trait's contract alone (the
// instruction set, and valid pointers for loads and stores), so its body is one
// unsafe operation with nothing else to justify.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: load and store move exactly 8 f32 (one __m256); each method is the
// AVX/AVX2/FMA instruction of the same meaning, which callers make sure exists.
unsafe impl F32Vector for Avx2 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        Self(_mm256_set1_ps(value))
    }
    #[inline(always)]
    unsafe fn load(source: *const f32) -> Self {
        Self(_mm256_loadu_ps(source))
    }
    #[inline(always)]
    unsafe fn load_bf16(source: *const u16) -> Self {
        let bits = _mm_loadu_si128(source.cast());
        Self(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(
            _mm256_cvtepu16_epi32(bits),
        )))
    }
    #[inline(always)]
    unsafe fn store(self, target: *mut f32) {
        _mm256_storeu_ps(target, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Self(_mm256_add_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        Self(_mm256_sub_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        Self(_mm256_mul_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn div(self, other: Self) -> Self {
        Self(_mm256_div_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, factor: Self, addend: Self) -> Self {
        Self(_mm256_fmadd_ps(self.0, factor.0, addend.0))
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        Self(_mm256_max_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn min(self, other: Self) -> Self {
        Self(_mm256_min_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Self(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
    }
    #[inline(always)]
    unsafe fn with_sign_of(self, sign: Self) -> Self {
        let sign_bit = _mm256_and_ps(sign.0, _mm256_set1_ps(-0.0));
        Self(_mm256_or_ps(self.abs().0, sign_bit))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Self(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }
    #[inline(always)]
    unsafe fn exp2_of_integer(self) -> Self {
        let biased = _mm256_add_epi32(_mm256_cvtps_epi32(self.0), _mm256_set1_epi32(127));
        Self(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)))
    }
    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        let halves = _mm_add_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        let halves = _mm_max_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let pairs = _mm_max_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_max_ss(pairs, _mm_movehdup_ps(pairs)))
    }
    #[inline(always)]
    unsafe fn prefetch(address: *const u8) {
        _mm_prefetch::<_MM_HINT_T1>(address.cast());
    }
}

/// Sixteen lanes in a 512-bit register; needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(pub(crate) __m512);

// As for Avx2, each method's body is one operation the contract covers.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: load and store move exactly 16 f32 (one __m512); each method is the
// AVX-512F instruction of the same meaning, which callers make sure exists.
unsafe impl F32Vector for Avx512 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        Self(_mm512_set1_ps(value))
    }
    #[inline(always)]
    unsafe fn load(source: *const f32) -> Self {
        Self(_mm512_loadu_ps(source))
    }
    #[inline(always)]
    unsafe fn load_bf16(source: *const u16) -> Self {
        let bits = _mm256_loadu_si256(source.cast());
        Self(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(
            _mm512_cvtepu16_epi32(bits),
        )))
    }
    #[inline(always)]
    unsafe fn store(self, target: *mut f32) {
        _mm512_storeu_ps(target, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Self(_mm512_add_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        Self(_mm512_sub_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        Self(_mm512_mul_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn div(self, other: Self) -> Self {
        Self(_mm512_div_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, factor: Self, addend: Self) -> Self {
        Self(_mm512_fmadd_ps(self.0, factor.0, addend.0))
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        Self(_mm512_max_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn min(self, other: Self) -> Self {
        Self(_mm512_min_ps(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Self(_mm512_abs_ps(self.0))
    }
    #[inline(always)]
    unsafe fn with_sign_of(self, sign: Self) -> Self {
        // Integer logic: the f32 and/or forms need AVX-512DQ, which is not assumed.
        let sign_bit = _mm512_and_si512(_mm512_castps_si512(sign.0), _mm512_set1_epi32(i32::MIN));
        let magnitude = _mm512_castps_si512(self.abs().0);
        Self(_mm512_castsi512_ps(_mm512_or_si512(magnitude, sign_bit)))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Self(_mm512_roundscale_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }
    #[inline(always)]
    unsafe fn exp2_of_integer(self) -> Self {
        let biased = _mm512_add_epi32(_mm512_cvtps_epi32(self.0), _mm512_set1_epi32(127));
        Self(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)))
    }
    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        _mm512_reduce_max_ps(self.0)
    }
    #[inline(always)]
    unsafe fn prefetch(address: *const u8) {
        _mm_prefetch::<_MM_HINT_T1>(address.cast());
    }
}

/// Four lanes in a 128-bit NEON register (every aarch64 CPU has NEON).
#[cfg(target_arch = "aarch64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Neon(float32x4_t);

// As for Avx2, each method's body is one operation the contract covers.
#[cfg(target_arch = "aarch64")]
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: load and store move exactly 4 f32 (one float32x4_t); each method is
// the NEON instruction of the same meaning, which callers make sure exists.
unsafe impl F32Vector for Neon {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        Self(vdupq_n_f32(value))
    }
    #[inline(always)]
    unsafe fn load(source: *const f32) -> Self {
        Self(vld1q_f32(source))
    }
    #[inline(always)]
    unsafe fn load_bf16(source: *const u16) -> Self {
        let widened = vshlq_n_u32::<16>(vmovl_u16(vld1_u16(source)));
        Self(vreinterpretq_f32_u32(widened))
    }
    #[inline(always)]
    unsafe fn store(self, target: *mut f32) {
        vst1q_f32(target, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Self(vaddq_f32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        Self(vsubq_f32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        Self(vmulq_f32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn div(self, other: Self) -> Self {
        Self(vdivq_f32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, factor: Self, addend: Self) -> Self {
        // vfmaq_f32(a, b, c) is a + b·c.
        Self(vfmaq_f32(addend.0, self.0, factor.0))
    }
    #[inline(always)]
    unsafe fn max(self, other: Self) -> Self {
        Self(vmaxq_f32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn min(self, other: Self) -> Self {
        Self(vminq_f32(self.0, other.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Self(vabsq_f32(self.0))
    }
    #[inline(always)]
    unsafe fn with_sign_of(self, sign: Self) -> Self {
        // Take the sign bit from `sign`, every other bit from |self|.
        let sign_bit = vdupq_n_u32(0x8000_0000);
        Self(vbslq_f32(sign_bit, sign.0, vabsq_f32(self.0)))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Self(vrndnq_f32(self.0))
    }
    #[inline(always)]
    unsafe fn exp2_of_integer(self) -> Self {
        let biased = vaddq_s32(vcvtnq_s32_f32(self.0), vdupq_n_s32(127));
        Self(vreinterpretq_f32_s32(vshlq_n_s32::<23>(biased)))
    }
    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        vaddvq_f32(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        vmaxvq_f32(self.0)
    }
}
