// Pooling and L2 normalisation of each sequence (one workgroup per sequence).
// `spans` holds two words per sequence: first token, token count.
// flags 0: mean over the sequence's tokens; 1: the first ([CLS]) token.

@group(0) @binding(1) var<storage, read> hidden: array<f32>;
@group(0) @binding(2) var<storage, read> spans: array<u32>;
@group(0) @binding(3) var<storage, read_write> pooled: array<f32>;

const POOL_CLS: u32 = 1u;

@compute @workgroup_size(REDUCE_THREADS)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let sequence = group.x;
    let width = params.cols;
    let start = spans[sequence * 2u];
    let length = select(spans[sequence * 2u + 1u], 1u, params.flags == POOL_CLS);
    var squares = 0.0;
    for (var column = lane; column < width; column += REDUCE_THREADS) {
        var sum = 0.0;
        for (var token = 0u; token < length; token++) {
            sum += hidden[(start + token) * width + column];
        }
        let value = sum / f32(length);
        pooled[sequence * width + column] = value;
        squares += value * value;
    }
    // sentence-transformers' Normalize divides by max(norm, 1e-12).
    let divisor = max(sqrt(workgroup_sum(lane, squares)), 1e-12);
    // Each invocation rescales only the columns it wrote, so no barrier is needed.
    for (var column = lane; column < width; column += REDUCE_THREADS) {
        pooled[sequence * width + column] = pooled[sequence * width + column] / divisor;
    }
}
