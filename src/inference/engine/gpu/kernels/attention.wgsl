// Self-attention of one query token in one head (one workgroup per token and head):
// softmax(q·Kᵀ·scale)·V over the keys of the token's own sequence only, which is the
// padding mask. `qkv` rows are [query | key | value], each `cols` (hidden) wide.

@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> context: array<f32>;

// Longest sequence and widest head the workgroup buffers hold; the host checks both.
const MAX_KEYS: u32 = 512u;
const MAX_HEAD_SIZE: u32 = 256u;

var<workgroup> query: array<f32, MAX_HEAD_SIZE>;
var<workgroup> scores: array<f32, MAX_KEYS>;

@compute @workgroup_size(REDUCE_THREADS)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let token = group.x;
    let head = group.y;
    let width = params.cols;
    let head_size = params.head_size;
    let stride = 3u * width;
    let start = tokens[token * 4u + 2u];
    let length = tokens[token * 4u + 3u];
    let head_offset = head * head_size;

    for (var d = lane; d < head_size; d += REDUCE_THREADS) {
        query[d] = qkv[token * stride + head_offset + d];
    }
    workgroupBarrier();

    var local_max = -3.4028235e38;
    for (var key = lane; key < length; key += REDUCE_THREADS) {
        let key_base = (start + key) * stride + width + head_offset;
        var dot = 0.0;
        for (var d = 0u; d < head_size; d++) {
            dot = fma(query[d], qkv[key_base + d], dot);
        }
        let score = dot * params.scale;
        scores[key] = score;
        local_max = max(local_max, score);
    }
    let row_max = workgroup_max(lane, local_max);

    var local_sum = 0.0;
    for (var key = lane; key < length; key += REDUCE_THREADS) {
        let weight = exp(scores[key] - row_max);
        scores[key] = weight;
        local_sum += weight;
    }
    let total = workgroup_sum(lane, local_sum);

    for (var d = lane; d < head_size; d += REDUCE_THREADS) {
        var sum = 0.0;
        for (var key = 0u; key < length; key++) {
            sum = fma(scores[key], qkv[(start + key) * stride + 2u * width + head_offset + d], sum);
        }
        context[token * width + head_offset + d] = sum / total;
    }
}
