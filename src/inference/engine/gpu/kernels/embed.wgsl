// Word + position + token-type-0 embeddings of each token (one workgroup per token).
// `tokens` holds two words per token: id, position.
// The tables are stored as `weight_scalar` (f32 or f16); the sum is f32.

@group(0) @binding(1) var<storage, read> word_embeddings: array<weight_scalar>;
@group(0) @binding(2) var<storage, read> position_embeddings: array<weight_scalar>;
@group(0) @binding(3) var<storage, read> token_type_embeddings: array<weight_scalar>;
@group(0) @binding(4) var<storage, read> tokens: array<u32>;
@group(0) @binding(5) var<storage, read_write> hidden: array<f32>;

@compute @workgroup_size(REDUCE_THREADS)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let token = group.x;
    let width = params.cols;
    let word = tokens[token * 2u] * width;
    let position = tokens[token * 2u + 1u] * width;
    for (var column = lane; column < width; column += REDUCE_THREADS) {
        hidden[token * width + column] = f32(word_embeddings[word + column])
            + f32(position_embeddings[position + column])
            + f32(token_type_embeddings[column]);
    }
}
