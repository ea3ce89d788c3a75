// Shared by every kernel: the per-dispatch parameters and workgroup reductions.
// The host writes one `Params` per dispatch into its own 256-byte uniform slot.

struct Params {
    // Rows of the output: tokens, or sequences for pooling.
    rows: u32,
    // Columns of the output (features); the hidden size for row-wise kernels.
    cols: u32,
    // The shared dimension of a matrix multiply.
    inner: u32,
    // Kernel-specific switches (see each kernel).
    flags: u32,
    // Layer-norm epsilon.
    epsilon: f32,
    // Attention score scale, 1/sqrt(HEAD_SIZE).
    scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;

const REDUCE_THREADS: u32 = 128u;
var<workgroup> partial: array<f32, REDUCE_THREADS>;

// Sum of `value` over the workgroup; every invocation must call it (uniform control flow).
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var step = REDUCE_THREADS / 2u; step > 0u; step = step / 2u) {
        if (lane < step) {
            partial[lane] = partial[lane] + partial[lane + step];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Maximum of `value` over the workgroup; every invocation must call it.
fn workgroup_max(lane: u32, value: f32) -> f32 {
    partial[lane] = value;
    workgroupBarrier();
    for (var step = REDUCE_THREADS / 2u; step > 0u; step = step / 2u) {
        if (lane < step) {
            partial[lane] = max(partial[lane], partial[lane + step]);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
