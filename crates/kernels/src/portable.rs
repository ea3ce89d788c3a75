//! The dense layer on any CPU, through the `gemm` crate (its own SIMD kernels
//! where it has them, portable code elsewhere). It is also the oracle the tests
//! hold the hand-written kernels to.

use gemm::Parallelism;

use crate::gemm::{Epilogue, Rows};

/// `output = left · weightᵀ + bias (+ residual)`, `weight` being `columns × depth`
/// row-major; GELU is the caller's. `output` is `left.count × columns`.
///
/// # Panics
/// When the shapes disagree (a programming error in this crate).
pub(crate) fn linear(
    left: Rows<'_>,
    weight: &[f32],
    columns: usize,
    epilogue: &Epilogue<'_>,
    output: &mut [f32],
) {
    let (rows, depth) = (left.count, left.depth);
    assert!(
        left.in_bounds() && left.stride == depth,
        "left operand shape"
    );
    assert_eq!(weight.len(), columns * depth, "weight shape");
    assert_eq!(output.len(), rows * columns, "output shape");
    for (row, values) in output.chunks_exact_mut(columns.max(1)).enumerate() {
        if let Some(bias) = epilogue.bias {
            values.copy_from_slice(&bias[..columns]);
        }
        if let Some(residual) = epilogue.residual {
            let residual = &residual[row * columns..][..columns];
            values
                .iter_mut()
                .zip(residual)
                .for_each(|(value, add)| *value += add);
        }
    }
    if rows == 0 || columns == 0 || depth == 0 {
        return;
    }
    let parallelism = match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        threads => Parallelism::Rayon(threads),
    };
    // SAFETY: `left` is rows × depth row-major inside its slice (checked), the
    // weight is columns × depth row-major, read transposed (column stride depth,
    // row stride 1), and output is rows × columns, exclusively borrowed, so it
    // aliases neither input. All strides fit in isize as slice lengths do.
    unsafe {
        gemm::gemm(
            rows,
            columns,
            depth,
            output.as_mut_ptr(),
            1,
            columns as isize,
            true,
            left.data.as_ptr(),
            1,
            depth as isize,
            weight.as_ptr(),
            depth as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
