// Self-attention of one block of QUERY_BLOCK queries of one sequence in one head
// (workgroups: query blocks × heads × sequences): softmax(q·Kᵀ·scale)·V over the keys
// of the query's own sequence only, which is the padding mask. `qkv` rows are
// [query | key | value], each `cols` (hidden) wide.
//
// Each invocation owns one query. The workgroup stages KEY_CHUNK keys and values at a
// time in workgroup memory, so each is read from storage once per block of queries
// rather than once per query, and each invocation folds a chunk into its running
// maximum, sum and weighted values (online softmax), all in registers: no workgroup
// reductions, and no bound on the sequence length. HEAD_SIZE, KEY_CHUNK and
// QUERY_BLOCK come from the host's header, so every loop below has a constant trip
// count the compiler can unroll into registers.

@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> spans: array<u32>;
@group(0) @binding(3) var<storage, read_write> context: array<f32>;

const CHUNK_VALUES: u32 = KEY_CHUNK * HEAD_SIZE;
// Below any score, yet finite: exp(LOWEST - score) is 0, never NaN.
const LOWEST: f32 = -3.4028235e38;

var<workgroup> chunk_keys: array<f32, CHUNK_VALUES>;
var<workgroup> chunk_values: array<f32, CHUNK_VALUES>;
var<workgroup> shared_length: u32;

@compute @workgroup_size(QUERY_BLOCK)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let sequence = group.z;
    let start = spans[sequence * 2u];
    if (lane == 0u) {
        shared_length = spans[sequence * 2u + 1u];
    }
    // Uniform across the workgroup, so the chunk loop's barriers are too.
    let length = workgroupUniformLoad(&shared_length);
    let first_query = group.x * QUERY_BLOCK;
    if (first_query >= length) {
        return;
    }
    let width = params.cols;
    let stride = 3u * width;
    let head_offset = group.y * HEAD_SIZE;
    let query_index = first_query + lane;
    let in_sequence = query_index < length;

    var query: array<f32, HEAD_SIZE>;
    var weighted: array<f32, HEAD_SIZE>;
    if (in_sequence) {
        let row = (start + query_index) * stride + head_offset;
        for (var d = 0u; d < HEAD_SIZE; d++) {
            query[d] = qkv[row + d] * params.scale;
        }
    }
    var running_max = LOWEST;
    var running_sum = 0.0;
    for (var chunk = 0u; chunk < length; chunk += KEY_CHUNK) {
        let count = min(KEY_CHUNK, length - chunk);
        // Keys past the sequence are staged as zeros, which their zero weights ignore.
        for (var element = lane; element < CHUNK_VALUES; element += QUERY_BLOCK) {
            let key = element / HEAD_SIZE;
            var key_value = 0.0;
            var value_value = 0.0;
            if (key < count) {
                let row = (start + chunk + key) * stride + head_offset + element % HEAD_SIZE;
                key_value = qkv[row + width];
                value_value = qkv[row + 2u * width];
            }
            chunk_keys[element] = key_value;
            chunk_values[element] = value_value;
        }
        workgroupBarrier();
        if (in_sequence) {
            var scores: array<f32, KEY_CHUNK>;
            var chunk_max = running_max;
            for (var key = 0u; key < KEY_CHUNK; key++) {
                var dot = 0.0;
                for (var d = 0u; d < HEAD_SIZE; d++) {
                    dot = fma(query[d], chunk_keys[key * HEAD_SIZE + d], dot);
                }
                scores[key] = select(LOWEST, dot, key < count);
                chunk_max = max(chunk_max, scores[key]);
            }
            let correction = exp(running_max - chunk_max);
            running_sum *= correction;
            for (var d = 0u; d < HEAD_SIZE; d++) {
                weighted[d] *= correction;
            }
            for (var key = 0u; key < KEY_CHUNK; key++) {
                let weight = exp(scores[key] - chunk_max);
                running_sum += weight;
                for (var d = 0u; d < HEAD_SIZE; d++) {
                    weighted[d] = fma(weight, chunk_values[key * HEAD_SIZE + d], weighted[d]);
                }
            }
            running_max = chunk_max;
        }
        workgroupBarrier();
    }
    if (in_sequence) {
        let row = (start + query_index) * width + head_offset;
        for (var d = 0u; d < HEAD_SIZE; d++) {
            context[row + d] = weighted[d] / running_sum;
        }
    }
}
