//! Elementwise and row-wise math on [`F32Vector`]s: `exp`, `erf` and GELU, the
//! softmax and the layer norm. Each is one generic function; a row that is not a
//! whole number of registers finishes with the same function on [`Scalar`]
//! lanes, so every element gets the same arithmetic wherever it sits.

use crate::vector::{F32Vector, Scalar};

/// `eˣ`, to about one unit in the last place over the range the encoder meets.
///
/// `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`; `eʳ` from its Taylor series to `r⁶`
/// (the first omitted term is below 1.2·10⁻⁷ relative), then scaled by `2ⁿ`.
/// Inputs are clamped to `[-87, 88]`, where `2ⁿ` stays a normal float.
#[inline(always)]
pub(crate) unsafe fn exp<V: F32Vector>(x: V) -> V {
    // Split ln 2 so that n·LN2_HIGH is exact for the n that occur (|n| ≤ 127).
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    // SAFETY: the caller runs on V's instruction set (this function's contract).
    unsafe {
        let x = x.max(V::splat(-87.0)).min(V::splat(88.0));
        let n = x.mul(V::splat(std::f32::consts::LOG2_E)).round();
        let r = n
            .mul_add(V::splat(-LN2_HIGH), x)
            .sub(n.mul(V::splat(LN2_LOW)));
        let mut series = V::splat(1.0 / 720.0);
        for coefficient in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            series = series.mul_add(r, V::splat(coefficient));
        }
        series.mul(n.exp2_of_integer())
    }
}

/// `erf(x)` with an absolute error below 1.5·10⁻⁷ (Abramowitz & Stegun 7.1.26):
/// `1 − t·P(t)·e^(−x²)`, `t = 1 / (1 + p·|x|)`, and the sign of `x`.
#[inline(always)]
pub(crate) unsafe fn erf<V: F32Vector>(x: V) -> V {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    // SAFETY: the caller runs on V's instruction set (this function's contract).
    unsafe {
        let magnitude = x.abs().min(V::splat(9.0));
        let t = V::splat(1.0).div(magnitude.mul_add(V::splat(P), V::splat(1.0)));
        let mut polynomial = V::splat(A[4]);
        for &coefficient in A[..4].iter().rev() {
            polynomial = polynomial.mul_add(t, V::splat(coefficient));
        }
        let tail = polynomial
            .mul(t)
            .mul(exp(magnitude.mul(magnitude).mul(V::splat(-1.0))));
        V::splat(1.0).sub(tail).with_sign_of(x)
    }
}

/// GELU in its exact form, `x·Φ(x) = x/2·(1 + erf(x/√2))`, as BERT was trained with.
#[inline(always)]
pub(crate) unsafe fn gelu<V: F32Vector>(x: V) -> V {
    // SAFETY: the caller runs on V's instruction set (this function's contract).
    unsafe {
        let phi = erf(x.mul(V::splat(std::f32::consts::FRAC_1_SQRT_2))).add(V::splat(1.0));
        x.mul(V::splat(0.5)).mul(phi)
    }
}

/// A function applied to each lane alike, written once for every vector width
/// (closures cannot be generic over the vector type).
trait Lanewise {
    /// The function on one register.
    unsafe fn apply<V: F32Vector>(&self, x: V) -> V;
}

/// `x`.
struct Identity;
/// `x · factor`.
struct Times(f32);
/// `e^(x · scale + shift)`.
struct ScaledExp {
    scale: f32,
    shift: f32,
}
/// `(x − mean)²`.
struct SquaredDeviation(f32);
/// GELU.
struct Gelu;

impl Lanewise for Identity {
    #[inline(always)]
    unsafe fn apply<V: F32Vector>(&self, x: V) -> V {
        x
    }
}

impl Lanewise for Times {
    #[inline(always)]
    unsafe fn apply<V: F32Vector>(&self, x: V) -> V {
        // SAFETY: the caller runs on V's instruction set.
        unsafe { x.mul(V::splat(self.0)) }
    }
}

impl Lanewise for ScaledExp {
    #[inline(always)]
    unsafe fn apply<V: F32Vector>(&self, x: V) -> V {
        // SAFETY: the caller runs on V's instruction set.
        unsafe { exp(x.mul_add(V::splat(self.scale), V::splat(self.shift))) }
    }
}

impl Lanewise for SquaredDeviation {
    #[inline(always)]
    unsafe fn apply<V: F32Vector>(&self, x: V) -> V {
        // SAFETY: the caller runs on V's instruction set.
        unsafe {
            let deviation = x.sub(V::splat(self.0));
            deviation.mul(deviation)
        }
    }
}

impl Lanewise for Gelu {
    #[inline(always)]
    unsafe fn apply<V: F32Vector>(&self, x: V) -> V {
        // SAFETY: the caller runs on V's instruction set.
        unsafe { gelu(x) }
    }
}

/// Replaces every element of `values` by `function` of it: whole registers of
/// `V`, then the tail one lane at a time.
#[inline(always)]
unsafe fn map_in_place<V: F32Vector>(values: &mut [f32], function: &impl Lanewise) {
    let whole = values.len() - values.len() % V::LANES;
    let (body, tail) = values.split_at_mut(whole);
    for chunk in body.chunks_exact_mut(V::LANES) {
        // SAFETY: chunk holds exactly LANES f32; the caller runs on V's instruction set.
        unsafe {
            function
                .apply(V::load(chunk.as_ptr()))
                .store(chunk.as_mut_ptr())
        }
    }
    for value in tail {
        // SAFETY: one f32 behind a valid reference.
        unsafe { function.apply(Scalar::load(value)).store(value) }
    }
}

/// `Σ function(x)` over `values`: whole registers of `V`, then the tail.
#[inline(always)]
unsafe fn sum<V: F32Vector>(values: &[f32], function: &impl Lanewise) -> f32 {
    let whole = values.len() - values.len() % V::LANES;
    // SAFETY: the caller runs on V's instruction set; every load reads LANES (or
    // one) f32 inside `values`.
    unsafe {
        let mut total = V::splat(0.0);
        for chunk in values[..whole].chunks_exact(V::LANES) {
            total = total.add(function.apply(V::load(chunk.as_ptr())));
        }
        let mut total = total.reduce_sum();
        for value in &values[whole..] {
            total += function.apply(Scalar::load(value)).reduce_sum();
        }
        total
    }
}

/// `softmax(row · scale)` in place.
#[inline(always)]
pub(crate) unsafe fn softmax<V: F32Vector>(row: &mut [f32], scale: f32) {
    let whole = row.len() - row.len() % V::LANES;
    // SAFETY: the caller runs on V's instruction set; loads stay inside `row`.
    unsafe {
        let mut max = V::splat(f32::NEG_INFINITY);
        for chunk in row[..whole].chunks_exact(V::LANES) {
            max = max.max(V::load(chunk.as_ptr()));
        }
        let max = row[whole..]
            .iter()
            .fold(max.reduce_max(), |max, &value| max.max(value));
        map_in_place::<V>(
            row,
            &ScaledExp {
                scale,
                shift: -max * scale,
            },
        );
        let total = sum::<V>(row, &Identity);
        map_in_place::<V>(row, &Times(1.0 / total));
    }
}

/// GELU of every element, in place.
#[inline(always)]
pub(crate) unsafe fn gelu_in_place<V: F32Vector>(values: &mut [f32]) {
    // SAFETY: the caller runs on V's instruction set.
    unsafe { map_in_place::<V>(values, &Gelu) }
}

/// Layer norm of one row: `(x − mean) / √(variance + eps) · scale + shift`.
///
/// # Panics
/// When `scale` or `shift` is not as wide as `row` (a programming error).
#[inline(always)]
pub(crate) unsafe fn layer_norm<V: F32Vector>(
    row: &mut [f32],
    scale: &[f32],
    shift: &[f32],
    eps: f32,
) {
    assert!(
        scale.len() == row.len() && shift.len() == row.len(),
        "layer norm widths differ"
    );
    let count = row.len() as f32;
    // SAFETY: the caller runs on V's instruction set; every pointer below reads or
    // writes LANES (or one) f32 at the same in-bounds offset of three slices of
    // row's length.
    unsafe {
        let mean = sum::<V>(row, &Identity) / count;
        let variance = sum::<V>(row, &SquaredDeviation(mean)) / count;
        let inverse = 1.0 / (variance + eps).sqrt();
        let whole = row.len() - row.len() % V::LANES;
        let (value, scale, shift) = (row.as_mut_ptr(), scale.as_ptr(), shift.as_ptr());
        for index in (0..whole).step_by(V::LANES) {
            normalize::<V>(
                value.add(index),
                scale.add(index),
                shift.add(index),
                mean,
                inverse,
            );
        }
        for index in whole..row.len() {
            normalize::<Scalar>(
                value.add(index),
                scale.add(index),
                shift.add(index),
                mean,
                inverse,
            );
        }
    }
}

/// One register of the layer norm's last step.
#[inline(always)]
unsafe fn normalize<V: F32Vector>(
    value: *mut f32,
    scale: *const f32,
    shift: *const f32,
    mean: f32,
    inverse: f32,
) {
    // SAFETY: the caller passes LANES valid f32 at each pointer and runs on V's
    // instruction set.
    unsafe {
        let centred = V::load(value).sub(V::splat(mean)).mul(V::splat(inverse));
        centred.mul_add(V::load(scale), V::load(shift)).store(value);
    }
}
