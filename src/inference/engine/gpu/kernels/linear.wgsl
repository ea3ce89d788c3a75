// output = epilogue(input · weightᵀ + bias): a tiled matrix multiply where each
// workgroup computes a 64×64 output tile and each invocation a 4×4 block of it,
// staging 64×16 slices of both operands in workgroup memory. Each step of the
// inner loop reads its 4 rows and 4 columns as two vec4 loads, and the staged rows
// are padded (ROW) so the transposing stores of one staging step fall in
// different banks of workgroup memory instead of all in one.
// `input` is rows × inner, `weight` is cols × inner (PyTorch's layout), both row-major;
// weights are stored as `weight_scalar` (f32 or f16) and widened as they are staged.
// flags bit 0: apply GELU (erf form); bit 1: add `residual` (rows × cols).

@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<weight_scalar>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

const TILE: u32 = 64u;
const TILE_INNER: u32 = 16u;
const BLOCK: u32 = 4u;
const FLAG_GELU: u32 = 1u;
const FLAG_RESIDUAL: u32 = 2u;

// Both tiles are stored inner-major, ROW floats per k: element (k, row) is float
// k * ROW + row, in vec4s so the inner loop loads four rows at once.
const ROW: u32 = TILE + 4u;
const ROW_VECTORS: u32 = ROW / 4u;
var<workgroup> input_tile: array<vec4<f32>, TILE_INNER * ROW_VECTORS>;
var<workgroup> weight_tile: array<vec4<f32>, TILE_INNER * ROW_VECTORS>;

// erf(x) with a relative error below 1.2e-7 (Numerical Recipes' Chebyshev fit of erfc);
// WGSL has no erf.
fn erf(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let polynomial = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let complement = t * exp(polynomial);
    return select(complement - 1.0, 1.0 - complement, x >= 0.0);
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf(x * 0.70710678118654752));
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let rows = params.rows;
    let cols = params.cols;
    let inner = params.inner;
    let row_base = group.y * TILE;
    let col_base = group.x * TILE;
    var sums: array<f32, 16>;
    for (var k_base = 0u; k_base < inner; k_base += TILE_INNER) {
        // 1024 elements of each operand, four per invocation; neighbouring lanes read
        // neighbouring k, so loads are contiguous along the rows of both operands.
        for (var part = 0u; part < 4u; part++) {
            let element = lane + part * 256u;
            let offset = element / TILE_INNER;
            let k = element % TILE_INNER;
            let global_k = k_base + k;
            let row = row_base + offset;
            let col = col_base + offset;
            var a = 0.0;
            if (row < rows && global_k < inner) {
                a = input[row * inner + global_k];
            }
            var b = 0.0;
            if (col < cols && global_k < inner) {
                b = f32(weight[col * inner + global_k]);
            }
            let slot = k * ROW_VECTORS + offset / 4u;
            input_tile[slot][offset % 4u] = a;
            weight_tile[slot][offset % 4u] = b;
        }
        workgroupBarrier();
        for (var k = 0u; k < TILE_INNER; k++) {
            let a = input_tile[k * ROW_VECTORS + local.y];
            let b = weight_tile[k * ROW_VECTORS + local.x];
            for (var i = 0u; i < BLOCK; i++) {
                for (var j = 0u; j < BLOCK; j++) {
                    sums[i * BLOCK + j] = fma(a[i], b[j], sums[i * BLOCK + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < BLOCK; i++) {
        let row = row_base + local.y * BLOCK + i;
        for (var j = 0u; j < BLOCK; j++) {
            let col = col_base + local.x * BLOCK + j;
            if (row < rows && col < cols) {
                var value = sums[i * BLOCK + j] + bias[col];
                if ((params.flags & FLAG_GELU) != 0u) {
                    value = gelu(value);
                }
                if ((params.flags & FLAG_RESIDUAL) != 0u) {
                    value += residual[row * cols + col];
                }
                output[row * cols + col] = value;
            }
        }
    }
}
