//! Measures the embedding engine: batch-1 latency of a ~16-token sentence, and
//! sentences per second for batches of 32 short sentences (~12 words) and of 32
//! long passages (~120 words); on a GPU also for a batch of 256 passages of ~110
//! words (~128 tokens), the size a GPU is for. Run with `task bench-inference`
//! (a release build).
//!
//! `cargo run --release --example embed_bench -- [cpu|gpu|auto] [seconds per case]`;
//! the model directory comes from `INFERENCE_MODEL_DIR` (default models/all-MiniLM-L6-v2)
//! and the weights' precision from `INFERENCE_PRECISION` (`f32`, `bf16`). Last it
//! prints the resident memory, now and at its peak.

// A benchmark: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use tessera::inference::engine::{
    DEFAULT_MODEL_DIR, DeviceChoice, EmbeddingEngine, EngineError, Precision,
};

/// The same allocator as the `tessera` binary, so the figures are the service's.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

const WORDS: &[&str] = &[
    "the",
    "service",
    "stores",
    "every",
    "request",
    "in",
    "a",
    "durable",
    "queue",
    "while",
    "workers",
    "compute",
    "embeddings",
    "for",
    "documents",
    "that",
    "users",
    "upload",
    "from",
    "their",
    "phones",
    "and",
    "laptops",
    "during",
    "long",
    "meetings",
    "about",
    "quarterly",
    "budgets",
    "river",
    "mountain",
    "library",
    "coffee",
    "morning",
    "network",
    "latency",
    "careful",
    "engineers",
    "measure",
    "results",
    "before",
    "shipping",
    "new",
    "features",
];

/// A deterministic pseudo-random text of `words` words.
fn text(seed: usize, words: usize) -> String {
    let mut state = seed as u64 * 0x9E37_79B9_7F4A_7C15 + 1;
    let mut picked = Vec::with_capacity(words);
    for _ in 0..words {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        picked.push(WORDS[(state % WORDS.len() as u64) as usize]);
    }
    format!("{}.", picked.join(" "))
}

/// Runs `work` repeatedly for about `budget` after one warm-up; returns each run's duration.
fn time_runs(
    budget: Duration,
    mut work: impl FnMut() -> Result<(), EngineError>,
) -> Result<Vec<Duration>, EngineError> {
    work()?;
    let mut runs = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget || runs.len() < 3 {
        let run = Instant::now();
        work()?;
        runs.push(run.elapsed());
    }
    runs.sort();
    Ok(runs)
}

fn median(runs: &[Duration]) -> Duration {
    runs[runs.len() / 2]
}

fn main() -> Result<(), EngineError> {
    let mut args = std::env::args().skip(1);
    let device: DeviceChoice = args.next().as_deref().unwrap_or("cpu").parse()?;
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let budget = Duration::from_secs_f64(seconds);
    let model_dir = std::env::var_os("INFERENCE_MODEL_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR), PathBuf::from);
    let precision: Precision = std::env::var("INFERENCE_PRECISION")
        .as_deref()
        .unwrap_or("f32")
        .parse()
        .expect("INFERENCE_PRECISION is f32 or bf16");
    let engine = EmbeddingEngine::load(&model_dir, device, precision)?;
    let info = engine.backend_info();
    println!(
        "model {} on {} {} ({}, {} weights), {} s per case",
        model_dir.display(),
        info.backend,
        info.adapter,
        info.api,
        info.precision,
        seconds
    );

    let sentence = [text(0, 12)];
    let tokens = engine.embed(&sentence)?.token_counts[0];
    let runs = time_runs(budget, || engine.embed(&sentence).map(drop))?;
    println!(
        "batch 1 ({tokens} tokens): median {:.2} ms, p90 {:.2} ms, min {:.2} ms ({} runs)",
        median(&runs).as_secs_f64() * 1e3,
        runs[runs.len() * 9 / 10].as_secs_f64() * 1e3,
        runs[0].as_secs_f64() * 1e3,
        runs.len()
    );

    let mut cases = vec![(32, "short", 12), (32, "long", 120)];
    if info.backend == "gpu" {
        cases.push((256, "long", 110));
    }
    for (size, label, words) in cases {
        let batch: Vec<String> = (1..=size).map(|seed| text(seed, words)).collect();
        let tokens: usize = engine.embed(&batch)?.token_counts.iter().sum();
        let runs = time_runs(budget, || engine.embed(&batch).map(drop))?;
        let seconds = median(&runs).as_secs_f64();
        let texts = size as f64;
        println!(
            "batch {size} {label} (~{words} words, {:.0} tokens avg): {:.1} sentences/s, {:.0} tokens/s, median {:.1} ms per batch ({} runs)",
            tokens as f64 / texts,
            texts / seconds,
            tokens as f64 / seconds,
            seconds * 1e3,
            runs.len()
        );
    }
    println!(
        "memory: RSS {} after the cases (peak {}, loading included)",
        status_field("VmRSS:"),
        status_field("VmHWM:")
    );
    Ok(())
}

/// A memory figure of this process from Linux's /proc/self/status (`VmRSS`:
/// resident now, `VmHWM`: the peak), or `unknown` where /proc does not say.
fn status_field(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} MiB", kib / 1024.0))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
