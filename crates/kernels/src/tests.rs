//! Every kernel, on every instruction set this CPU runs, against a naive `f64`
//! reference over random shapes (ragged edges included, since the shapes rarely
//! divide the tiles), and the hand-written kernels against the `gemm` crate.

use proptest::prelude::*;

use super::*;

/// Deterministic values in `[-magnitude, magnitude]` (xorshift), so a failing
/// case is reproduced by its seed.
fn values(seed: u64, count: usize, magnitude: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            (unit * 2.0 - 1.0) * magnitude
        })
        .collect()
}

fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// What `Kernels::linear` computes, in f64, with the bound on an f32 chain of
/// `depth` fused multiply-adds over the same terms (|error| ≤ ~depth·ε·Σ|terms|).
fn reference_linear(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    gelu: bool,
    depth: usize,
) -> Vec<(f64, f64)> {
    let (rows, columns) = (input.len() / depth, bias.len());
    let mut output = Vec::with_capacity(rows * columns);
    for row in 0..rows {
        for column in 0..columns {
            let terms = (0..depth)
                .map(|d| f64::from(input[row * depth + d]) * f64::from(weight[column * depth + d]));
            let magnitude: f64 =
                terms.clone().map(f64::abs).sum::<f64>() + f64::from(bias[column].abs());
            let mut value = terms.sum::<f64>() + f64::from(bias[column]);
            if let Some(residual) = residual {
                value += f64::from(residual[row * columns + column]);
            }
            let mut bound = (depth as f64 + 4.0) * 1.2e-7 * (magnitude + value.abs());
            if gelu {
                value = gelu_f64(value);
                bound = bound * 1.2 + 2e-7 * (1.0 + value.abs());
            }
            output.push((value, bound + 1e-7));
        }
    }
    output
}

fn assert_close(actual: &[f32], expected: &[(f64, f64)], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (index, (&got, &(want, bound))) in actual.iter().zip(expected).enumerate() {
        let error = (f64::from(got) - want).abs();
        assert!(
            error <= bound,
            "{what}: element {index} is {got}, expected {want} (error {error:e} > {bound:e})"
        );
    }
}

/// The f32 weights a precision actually multiplies with.
fn stored(weight: &[f32], precision: Precision, kernels: Kernels) -> Vec<f32> {
    if precision == Precision::Bf16 && kernels.stores(precision) {
        rounded_to_bf16(weight)
    } else {
        weight.to_vec()
    }
}

/// The f32 activations a precision actually multiplies with: the bf16 units
/// (AMX, AVX512-BF16) round them to bf16 too.
fn multiplied(input: &[f32], precision: Precision, kernels: Kernels) -> Vec<f32> {
    if precision == Precision::Bf16 && kernels.bf16 != Bf16Multiply::Widened {
        rounded_to_bf16(input)
    } else {
        input.to_vec()
    }
}

fn rounded_to_bf16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| Bf16::from_f32(v).to_f32()).collect()
}

fn with_threads<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(work)
}

fn fused_case(choice: u8, residual: &[f32]) -> Fused<'_> {
    match choice % 3 {
        0 => Fused::Bias,
        1 => Fused::Residual(residual),
        _ => Fused::Gelu,
    }
}

/// Every instruction set this CPU runs, and each bf16 unit it has.
fn all_kernels() -> Vec<Kernels> {
    Kernels::every_variant()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn the_dense_layer_matches_the_f64_reference(
        rows in 0usize..80,
        depth in 1usize..400,
        columns in 1usize..80,
        fused in 0u8..3,
        bf16 in any::<bool>(),
        threads in 1usize..4,
        seed in any::<u64>(),
    ) {
        let input = values(seed, rows * depth, 1.0);
        let weight = values(seed ^ 1, columns * depth, 1.0);
        let bias = values(seed ^ 2, columns, 0.5);
        let residual = values(seed ^ 3, rows * columns, 2.0);
        let precision = if bf16 { Precision::Bf16 } else { Precision::F32 };
        for kernels in all_kernels() {
            let layer = kernels.pack_linear(&weight, &bias, columns, depth, precision);
            let fused = fused_case(fused, &residual);
            let actual = with_threads(threads, || kernels.linear(&input, &layer, fused));
            let expected = reference_linear(
                &multiplied(&input, precision, kernels),
                &stored(&weight, precision, kernels),
                &bias,
                matches!(fused, Fused::Residual(_)).then_some(residual.as_slice()),
                matches!(fused, Fused::Gelu),
                depth,
            );
            assert_close(&actual, &expected, &format!("{kernels:?} {precision:?} {fused:?}"));
        }
    }

    #[test]
    fn the_hand_written_kernels_agree_with_the_gemm_crate(
        rows in 1usize..40,
        depth in 1usize..300,
        columns in 1usize..70,
        seed in any::<u64>(),
    ) {
        let input = values(seed, rows * depth, 1.0);
        let weight = values(seed ^ 1, columns * depth, 1.0);
        let bias = values(seed ^ 2, columns, 0.5);
        let oracle = Kernels::for_isa(Isa::Portable).unwrap();
        let expected = oracle.linear(&input, &oracle.pack_linear(&weight, &bias, columns, depth, Precision::F32), Fused::Bias);
        for kernels in all_kernels() {
            let layer = kernels.pack_linear(&weight, &bias, columns, depth, Precision::F32);
            let actual = kernels.linear(&input, &layer, Fused::Bias);
            for (index, (got, want)) in actual.iter().zip(&expected).enumerate() {
                let bound = 1e-6 * (depth as f32).sqrt() * (1.0 + want.abs());
                prop_assert!((got - want).abs() <= bound, "{kernels:?}: element {index}: {got} vs gemm's {want}");
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_and_anywhere_in_a_batch(
        rows in 1usize..40,
        row in 0usize..40,
        depth in 1usize..600,
        columns in 1usize..70,
        threads in 1usize..4,
        seed in any::<u64>(),
    ) {
        let row = row % rows;
        let input = values(seed, rows * depth, 1.0);
        let weight = values(seed ^ 1, columns * depth, 1.0);
        let bias = values(seed ^ 2, columns, 0.5);
        // The gemm crate picks its kernels by shape, so it only agrees to rounding
        // (which the engine's tests allow); the hand-written ones agree bit for bit.
        let hand_written = all_kernels().into_iter().filter(|kernels| kernels.isa() != Isa::Portable);
        for kernels in hand_written {
            for precision in [Precision::F32, Precision::Bf16] {
                let layer = kernels.pack_linear(&weight, &bias, columns, depth, precision);
                let batch = with_threads(threads, || kernels.linear(&input, &layer, Fused::Gelu));
                let alone = kernels.linear(&input[row * depth..][..depth], &layer, Fused::Gelu);
                prop_assert_eq!(&batch[row * columns..][..columns], alone.as_slice(), "{:?} {:?}", kernels, precision);
            }
        }
    }

    #[test]
    fn attention_matches_the_f64_reference(
        lengths in proptest::collection::vec(0usize..24, 1..4),
        gap in 0usize..3,
        heads in 1usize..4,
        head_size in 1usize..40,
        magnitude in prop_oneof![Just(1.0f32), Just(8.0f32)],
        threads in 1usize..4,
        seed in any::<u64>(),
    ) {
        let mut sequences = Vec::new();
        let mut start = gap;
        for &length in &lengths {
            sequences.push(start..start + length);
            start += length + gap;
        }
        let tokens = start;
        let hidden = heads * head_size;
        let qkv = values(seed, tokens * 3 * hidden, magnitude);
        let expected = reference_attention(&qkv, &sequences, heads, head_size);
        for kernels in all_kernels() {
            let actual = with_threads(threads, || kernels.attention(&qkv, &sequences, heads, head_size));
            assert_close(&actual, &expected, &format!("{kernels:?}"));
        }
    }

    #[test]
    fn layer_norm_matches_the_f64_reference(
        rows in 1usize..6,
        width in 1usize..100,
        offset in -50.0f32..50.0,
        seed in any::<u64>(),
    ) {
        let input: Vec<f32> = values(seed, rows * width, 3.0).iter().map(|v| v + offset).collect();
        let scale = values(seed ^ 1, width, 2.0);
        let shift = values(seed ^ 2, width, 1.0);
        let eps = 1e-12;
        let mut expected = Vec::new();
        for row in input.chunks_exact(width) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64;
            let variance = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / width as f64;
            let inverse = 1.0 / (variance + f64::from(eps)).sqrt();
            for (index, &value) in row.iter().enumerate() {
                let normalized = (f64::from(value) - mean) * inverse;
                let want = normalized * f64::from(scale[index]) + f64::from(shift[index]);
                // f32 loses ~|mean|/σ·ε of each centred value.
                let bound = 4e-6 * (1.0 + f64::from(offset.abs()) * inverse) * (1.0 + f64::from(scale[index].abs()));
                expected.push((want, bound));
            }
        }
        for kernels in all_kernels() {
            let mut actual = input.clone();
            kernels.layer_norm(&mut actual, &scale, &shift, eps);
            assert_close(&actual, &expected, &format!("{kernels:?}"));
        }
    }
}

/// `softmax(Q·Kᵀ/√d)·V` per sequence and head, in f64, with an error bound.
fn reference_attention(
    qkv: &[f32],
    sequences: &[TokenRange],
    heads: usize,
    head_size: usize,
) -> Vec<(f64, f64)> {
    let hidden = heads * head_size;
    let tokens = qkv.len() / (3 * hidden);
    let at = |token: usize, part: usize, head: usize, d: usize| {
        f64::from(qkv[token * 3 * hidden + part * hidden + head * head_size + d])
    };
    let mut output = vec![(0.0, 1e-7); tokens * hidden];
    for sequence in sequences {
        for head in 0..heads {
            for query in sequence.clone() {
                let scores: Vec<f64> = sequence
                    .clone()
                    .map(|key| {
                        (0..head_size)
                            .map(|d| at(query, 0, head, d) * at(key, 1, head, d))
                            .sum::<f64>()
                            / (head_size as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let spread = scores.iter().map(|s| s.abs()).fold(0.0, f64::max);
                for d in 0..head_size {
                    let value: f64 = sequence
                        .clone()
                        .zip(&weights)
                        .map(|(key, w)| w / total * at(key, 2, head, d))
                        .sum();
                    let largest = sequence
                        .clone()
                        .map(|key| at(key, 2, head, d).abs())
                        .fold(0.0, f64::max);
                    // Score errors grow with their size (exp turns them relative);
                    // the products with V add a depth-sized f32 chain.
                    let bound =
                        (2e-6 * (1.0 + spread) + 1e-6 * sequence.len() as f64) * (1.0 + largest);
                    output[query * hidden + head * head_size + d] = (value, bound);
                }
            }
        }
    }
    output
}

#[test]
fn gelu_matches_the_exact_form_over_its_whole_range() {
    let inputs: Vec<f32> = (-12_000..=12_000).map(|step| step as f32 * 1e-3).collect();
    for kernels in all_kernels() {
        let mut actual = inputs.clone();
        // SAFETY: all_kernels only lists supported instruction sets.
        unsafe { isa::gelu_in_place(kernels.isa(), &mut actual) };
        for (&x, &got) in inputs.iter().zip(&actual) {
            let want = gelu_f64(f64::from(x));
            let bound = 2e-7 * (1.0 + f64::from(x.abs()));
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "{kernels:?}: gelu({x}) = {got}, expected {want}"
            );
        }
    }
}

#[test]
fn softmax_of_extreme_scores_stays_finite_and_sums_to_one() {
    // Scores of ±1e30 (and the clamp inside exp) must not give NaN or infinity.
    let hidden = 2;
    let mut qkv = vec![0.0f32; 3 * 3 * hidden];
    for token in 0..3 {
        let row = &mut qkv[token * 3 * hidden..][..3 * hidden];
        row[..2].copy_from_slice(&[1e15, -1e15]);
        row[2..4].copy_from_slice(&[1e15 * (token as f32 - 1.0), 3.0]);
        row[4..6].copy_from_slice(&[token as f32, 1.0]);
    }
    for kernels in all_kernels() {
        let context = kernels.attention(&qkv, std::slice::from_ref(&(0..3)), 1, hidden);
        assert!(
            context.iter().all(|v| v.is_finite()),
            "{kernels:?}: {context:?}"
        );
        for token in 0..3 {
            // The second value column is 1 everywhere: softmax weights sum to 1.
            assert!(
                (context[token * hidden + 1] - 1.0).abs() < 1e-6,
                "{kernels:?}: {context:?}"
            );
        }
    }
}

#[test]
fn bf16_rounds_to_nearest_with_ties_to_even() {
    assert_eq!(Bf16::from_f32(1.0).to_f32(), 1.0);
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to even (1.0).
    assert_eq!(Bf16::from_f32(1.0 + 2f32.powi(-8)).to_f32(), 1.0);
    // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: ties to even (1 + 2⁻⁶).
    assert_eq!(
        Bf16::from_f32(1.0 + 3.0 * 2f32.powi(-8)).to_f32(),
        1.0 + 2f32.powi(-6)
    );
    assert_eq!(Bf16::from_f32(-2.5).to_f32(), -2.5);
    assert!(Bf16::from_f32(f32::NAN).to_f32().is_nan());
    assert_eq!(Bf16::from_f32(f32::INFINITY).to_f32(), f32::INFINITY);
    for value in values(7, 10_000, 100.0) {
        let rounded = Bf16::from_f32(value).to_f32();
        assert!(
            (rounded - value).abs() <= value.abs() * 2f32.powi(-8),
            "{value} → {rounded}"
        );
    }
}

#[test]
fn table_rows_add_as_stored() {
    let values = vec![1.0, 2.0, 3.0, 1.0 + 2f32.powi(-10), -0.5, 7.0];
    let exact = Table::new(values.clone(), 3, Precision::F32);
    let rounded = Table::new(values, 3, Precision::Bf16);
    assert_eq!((exact.bytes(), rounded.bytes()), (24, 12));
    let mut sum = [10.0f32; 3];
    exact.add_row(1, &mut sum);
    assert_eq!(sum, [11.0 + 2f32.powi(-10), 9.5, 17.0]);
    let mut sum = [10.0f32; 3];
    rounded.add_row(1, &mut sum);
    // 1 + 2⁻¹⁰ has no bf16 form: it rounds to 1.
    assert_eq!(sum, [11.0, 9.5, 17.0]);
}

#[test]
#[should_panic(expected = "range end index")]
fn a_row_past_the_table_is_refused() {
    Table::new(vec![0.0; 6], 3, Precision::F32).add_row(2, &mut [0.0; 3]);
}

#[test]
fn panels_hold_the_matrix_and_zeros_past_its_edge() {
    // A 3 × 5 matrix, element (d, c) = 10·d + c, in panels 4 wide, packed from
    // its columns and from its rows alike.
    let columns: Vec<Vec<f32>> = (0..5)
        .map(|c| (0..3).map(|d| (d * 10 + c) as f32).collect())
        .collect();
    let rows: Vec<Vec<f32>> = (0..3)
        .map(|d| (0..5).map(|c| (d * 10 + c) as f32).collect())
        .collect();
    let by_columns = Panels::<f32>::from_columns(3, 5, 4, |c| &columns[c]);
    let by_rows = Panels::<f32>::from_rows(3, 5, 4, |d| &rows[d]);
    for panels in [by_columns, by_rows] {
        assert_eq!(panels.count(), 2);
        for d in 0..3 {
            for c in 0..8 {
                let want = if c < 5 { (d * 10 + c) as f32 } else { 0.0 };
                assert_eq!(panels.element(d, c), want);
            }
        }
    }
}

#[test]
#[should_panic(expected = "residual shape")]
fn a_residual_of_the_wrong_shape_is_refused() {
    let kernels = Kernels::detect();
    let layer = kernels.pack_linear(&[1.0; 6], &[0.0; 3], 3, 2, Precision::F32);
    kernels.linear(&[1.0; 4], &layer, Fused::Residual(&[0.0; 5]));
}

#[test]
#[should_panic(expected = "sequences must be in order")]
fn overlapping_sequences_are_refused() {
    Kernels::detect().attention(&[0.0; 4 * 6], &[0..3, 2..4], 1, 2);
}
