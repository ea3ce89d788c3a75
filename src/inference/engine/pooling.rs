//! Token vectors to one sentence vector, shared by every backend that returns
//! hidden states to the host.

use super::config::Pooling;

/// Pools the hidden states of one sequence (`length × hidden`, row-major, padding excluded).
pub fn pool(states: &[f32], hidden: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => states[..hidden].to_vec(),
        Pooling::Mean => mean_rows(states, hidden),
    }
}

fn mean_rows(states: &[f32], hidden: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; hidden];
    let rows = states.chunks_exact(hidden);
    let count = rows.len().max(1) as f32;
    for row in rows {
        for (total, value) in sum.iter_mut().zip(row) {
            *total += value;
        }
    }
    sum.iter_mut().for_each(|total| *total /= count);
    sum
}

/// Scales a vector to unit length so dot products are cosine similarities; a zero
/// vector stays zero.
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    // sentence-transformers' Normalize divides by max(norm, 1e-12).
    let divisor = norm.max(1e-12);
    vector.iter_mut().for_each(|value| *value /= divisor);
}
