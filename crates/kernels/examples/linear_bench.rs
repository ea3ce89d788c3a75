//! GFLOP/s of one dense layer on the hand-written kernels (each bf16 unit
//! included, AMX and AVX512-BF16, where the CPU has it) and on the `gemm` crate (the portable path), same shape, same threads, for tuning the
//! microkernel and the task split:
//!
//! `cargo run --release -p tessera-kernels --example linear_bench -- ROWS DEPTH COLUMNS [f32|bf16]`
//!
//! `THREADS` (default 2) sets the pool: one thread shows the microkernel alone,
//! two show how the task split scales.
//!
//! The encoder's shapes are ROWS = tokens, DEPTH × COLUMNS = 384 × 1152 (QKV),
//! 384 × 384, 384 × 1536 and 1536 × 384.

// A benchmark: a bad argument should stop it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use tessera_kernels::{Fused, Kernels, Precision};

const WARM_UP_RUNS: usize = 3;
const TIMED_RUNS: usize = 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize| -> usize {
        args.get(index)
            .and_then(|value| value.parse().ok())
            .expect("usage: linear_bench ROWS DEPTH COLUMNS [f32|bf16]")
    };
    let (rows, depth, columns) = (number(0), number(1), number(2));
    let precision: Precision = args.get(3).map_or("f32", String::as_str).parse().unwrap();
    let input: Vec<f32> = (0..rows * depth).map(|i| (i % 17) as f32 * 0.01).collect();
    let weight: Vec<f32> = (0..columns * depth)
        .map(|i| (i % 13) as f32 * 0.01)
        .collect();
    let bias = vec![0.1; columns];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(std::env::var("THREADS").map_or(2, |threads| threads.parse().unwrap()))
        .build()
        .unwrap();
    for kernels in Kernels::every_variant() {
        let layer = kernels.pack_linear(&weight, &bias, columns, depth, precision);
        let seconds = pool.install(|| {
            for _ in 0..WARM_UP_RUNS {
                std::hint::black_box(kernels.linear(&input, &layer, Fused::Bias));
            }
            let started = Instant::now();
            for _ in 0..TIMED_RUNS {
                std::hint::black_box(kernels.linear(&input, &layer, Fused::Bias));
            }
            started.elapsed().as_secs_f64() / TIMED_RUNS as f64
        });
        let flops = 2.0 * (rows * depth * columns) as f64;
        println!(
            "{} {rows}×{depth}×{columns} ({}): {:.3} ms, {:.1} GFLOP/s",
            kernels.name(precision),
            precision.name(),
            seconds * 1e3,
            flops / seconds / 1e9
        );
    }
}
