// Layer norm of each row in place (one workgroup per row), two-pass for precision.

@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> rows: array<f32>;

@compute @workgroup_size(REDUCE_THREADS)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let width = params.cols;
    let base = group.x * width;
    var sum = 0.0;
    for (var column = lane; column < width; column += REDUCE_THREADS) {
        sum += rows[base + column];
    }
    let mean = workgroup_sum(lane, sum) / f32(width);
    var squares = 0.0;
    for (var column = lane; column < width; column += REDUCE_THREADS) {
        let centred = rows[base + column] - mean;
        squares += centred * centred;
    }
    let variance = workgroup_sum(lane, squares) / f32(width);
    let inverse = 1.0 / sqrt(variance + params.epsilon);
    for (var column = lane; column < width; column += REDUCE_THREADS) {
        rows[base + column] = (rows[base + column] - mean) * inverse * gamma[column] + beta[column];
    }
}
