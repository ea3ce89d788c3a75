//! The text-embedding engine.
//!
//! Most tests build a tiny BERT (2 layers, hidden 32, 4 heads, FFN 64, a 50-token
//! WordPiece vocabulary) with deterministic random weights in a temporary directory,
//! so the math is checked against a naive reference written here, without the real
//! model. The parity test uses the real all-MiniLM-L6-v2 (`task model-fetch`) and the
//! sentence-transformers reference vectors, and says SKIPPED loudly when either is absent.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tiny_model::*;
use common::{real_model_dir, skip};
use serde_json::json;
use tessera::inference::engine::{DeviceChoice, EmbeddingEngine, EngineError, Pooling, Precision};

/// The engine on `device` with f32 weights; `None` (after reporting the skip) when
/// the device is a GPU and the machine has no adapter.
fn load_on(test: &str, dir: &Path, device: DeviceChoice) -> Option<EmbeddingEngine> {
    load_in(test, dir, device, Precision::F32)
}

/// [`load_on`] with the weights stored in `precision`.
fn load_in(
    test: &str,
    dir: &Path,
    device: DeviceChoice,
    precision: Precision,
) -> Option<EmbeddingEngine> {
    match EmbeddingEngine::load(dir, device, precision) {
        Ok(engine) => {
            eprintln!("{test}: running on {:?}", engine.backend_info());
            Some(engine)
        }
        Err(EngineError::NoGpuAdapter(reason)) if device == DeviceChoice::Gpu => {
            skip(test, reason);
            None
        }
        Err(error) => panic!("{test}: loading on {device:?} failed: {error}"),
    }
}

// ---------------------------------------------------------------------------
// The naive reference: plain loops in f64, straight from the BERT paper's equations
// ---------------------------------------------------------------------------

type Matrix = Vec<Vec<f64>>;

fn reference_linear(weights: &TinyWeights, name: &str, input: &Matrix) -> Matrix {
    let weight = weights.get(&format!("{name}.weight"));
    let bias = weights.get(&format!("{name}.bias"));
    let inputs = input[0].len();
    input
        .iter()
        .map(|row| {
            (0..bias.len())
                .map(|out| {
                    let mut sum = bias[out] as f64;
                    for i in 0..inputs {
                        sum += weight[out * inputs + i] as f64 * row[i];
                    }
                    sum
                })
                .collect()
        })
        .collect()
}

fn reference_layer_norm(weights: &TinyWeights, name: &str, input: &Matrix) -> Matrix {
    let gamma = weights.get(&format!("{name}.weight"));
    let beta = weights.get(&format!("{name}.bias"));
    input
        .iter()
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().sum::<f64>() / n;
            let variance = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            row.iter()
                .enumerate()
                .map(|(j, v)| {
                    (v - mean) / (variance + EPS).sqrt() * gamma[j] as f64 + beta[j] as f64
                })
                .collect()
        })
        .collect()
}

fn add(a: &Matrix, b: &Matrix) -> Matrix {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
        .collect()
}

fn reference_attention(weights: &TinyWeights, base: &str, x: &Matrix) -> Matrix {
    let q = reference_linear(weights, &format!("{base}.attention.self.query"), x);
    let k = reference_linear(weights, &format!("{base}.attention.self.key"), x);
    let v = reference_linear(weights, &format!("{base}.attention.self.value"), x);
    let n = x.len();
    let head_size = HIDDEN / HEADS;
    let mut context = vec![vec![0.0; HIDDEN]; n];
    for head in 0..HEADS {
        let columns = head * head_size..(head + 1) * head_size;
        for i in 0..n {
            let scores: Vec<f64> = (0..n)
                .map(|j| {
                    columns.clone().map(|c| q[i][c] * k[j][c]).sum::<f64>()
                        / (head_size as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            for c in columns.clone() {
                context[i][c] = (0..n).map(|j| exps[j] / total * v[j][c]).sum();
            }
        }
    }
    context
}

/// The sentence vector of one unpadded token sequence.
fn reference_embedding(weights: &TinyWeights, ids: &[u32], pooling: Pooling) -> Vec<f64> {
    let word = weights.get("embeddings.word_embeddings.weight");
    let position = weights.get("embeddings.position_embeddings.weight");
    let token_type = weights.get("embeddings.token_type_embeddings.weight");
    let embedded: Matrix = ids
        .iter()
        .enumerate()
        .map(|(p, &id)| {
            (0..HIDDEN)
                .map(|j| {
                    word[id as usize * HIDDEN + j] as f64
                        + position[p * HIDDEN + j] as f64
                        + token_type[j] as f64
                })
                .collect()
        })
        .collect();
    let mut x = reference_layer_norm(weights, "embeddings.LayerNorm", &embedded);
    for layer in 0..LAYERS {
        let base = format!("encoder.layer.{layer}");
        let context = reference_attention(weights, &base, &x);
        let projected =
            reference_linear(weights, &format!("{base}.attention.output.dense"), &context);
        let attended = reference_layer_norm(
            weights,
            &format!("{base}.attention.output.LayerNorm"),
            &add(&projected, &x),
        );
        let mut expanded =
            reference_linear(weights, &format!("{base}.intermediate.dense"), &attended);
        for value in expanded.iter_mut().flatten() {
            *value = 0.5 * *value * (1.0 + libm::erf(*value / std::f64::consts::SQRT_2));
        }
        let contracted = reference_linear(weights, &format!("{base}.output.dense"), &expanded);
        x = reference_layer_norm(
            weights,
            &format!("{base}.output.LayerNorm"),
            &add(&contracted, &attended),
        );
    }
    let pooled: Vec<f64> = match pooling {
        Pooling::Cls => x[0].clone(),
        Pooling::Mean => (0..HIDDEN)
            .map(|j| x.iter().map(|row| row[j]).sum::<f64>() / x.len() as f64)
            .collect(),
    };
    let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt();
    pooled.iter().map(|v| v / norm).collect()
}

/// The largest |a − b| of two vectors of the same engine.
fn largest_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dimensions differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_difference(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "dimensions differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

const SENTENCES: &[&str] = &[
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog!",
    "hello",
    "Cats and dogs play in the park, the sun is red and the tree is green.",
    "unknown zebra",
    "",
];

// ---------------------------------------------------------------------------
// Tests on the tiny model
// ---------------------------------------------------------------------------

#[test]
fn tokenizer_ignores_the_shipped_padding_and_truncates_at_max_seq_length() {
    let weights = TinyWeights::generate(1);
    let dir = tiny_model_dir("tokenizer", &weights, &TinyModelSpec::default());
    let engine = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap();
    let ids = engine
        .tokenize(&["A man is eating food.", "Dogs", "zebra"])
        .unwrap();
    assert_eq!(ids[0], vec![CLS_ID, 6, 7, 8, 9, 10, 33, SEP_ID]);
    assert_eq!(ids[1], vec![CLS_ID, 13, 30, SEP_ID], "dogs = dog ##s");
    assert_eq!(ids[2], vec![CLS_ID, 1, SEP_ID], "unknown word → [UNK]");

    let long = "the cat sat on the mat ".repeat(10);
    let ids = engine.tokenize(&[long.as_str()]).unwrap();
    assert_eq!(ids[0].len(), MAX_SEQ_LENGTH, "truncated at max_seq_length");
    assert_eq!(ids[0].first(), Some(&CLS_ID));
    assert_eq!(ids[0].last(), Some(&SEP_ID));

    let embeddings = engine.embed(&["hello", long.as_str()]).unwrap();
    assert_eq!(embeddings.token_counts, vec![3, MAX_SEQ_LENGTH]);
}

/// Sequences up to the tiny model's every position, past the GPU attention kernel's
/// block of 32 queries and chunk of 32 keys.
fn full_length_spec() -> TinyModelSpec {
    TinyModelSpec {
        max_seq_length: MAX_POSITIONS,
        ..TinyModelSpec::default()
    }
}

#[test]
fn cpu_backend_matches_the_naive_reference_with_mean_pooling() {
    let weights = TinyWeights::generate(2);
    let dir = tiny_model_dir("mean", &weights, &full_length_spec());
    let longest = assert_matches_reference(&dir.path, &weights, Pooling::Mean, DeviceChoice::Cpu);
    assert_eq!(longest, MAX_POSITIONS);
}

#[test]
fn cpu_backend_matches_the_naive_reference_with_cls_pooling_and_prefixed_names() {
    let weights = TinyWeights::generate(3);
    let spec = TinyModelSpec {
        pooling: Pooling::Cls,
        prefix: "bert.",
        ..TinyModelSpec::default()
    };
    let dir = tiny_model_dir("cls", &weights, &spec);
    assert_matches_reference(&dir.path, &weights, Pooling::Cls, DeviceChoice::Cpu);
}

#[test]
fn gpu_backend_matches_the_naive_reference_with_mean_pooling() {
    let weights = TinyWeights::generate(2);
    let dir = tiny_model_dir("gpu-mean", &weights, &full_length_spec());
    let longest = assert_matches_reference(&dir.path, &weights, Pooling::Mean, DeviceChoice::Gpu);
    // Without an adapter the test was skipped and measured nothing.
    assert!(longest == 0 || longest == MAX_POSITIONS, "{longest}");
}

#[test]
fn gpu_backend_matches_the_naive_reference_with_cls_pooling() {
    let weights = TinyWeights::generate(3);
    let spec = TinyModelSpec {
        pooling: Pooling::Cls,
        ..TinyModelSpec::default()
    };
    let dir = tiny_model_dir("gpu-cls", &weights, &spec);
    assert_matches_reference(&dir.path, &weights, Pooling::Cls, DeviceChoice::Gpu);
}

#[test]
fn gpu_and_cpu_backends_agree() {
    let weights = TinyWeights::generate(8);
    let dir = tiny_model_dir("agree", &weights, &TinyModelSpec::default());
    let Some(gpu) = load_on("gpu_and_cpu_backends_agree", &dir.path, DeviceChoice::Gpu) else {
        return;
    };
    let cpu = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap();
    let long = "the quick brown fox jumps over the lazy dog and the cat ".repeat(3);
    let mut texts: Vec<&str> = SENTENCES.to_vec();
    texts.push(&long);
    let on_gpu = gpu.embed(&texts).unwrap();
    let on_cpu = cpu.embed(&texts).unwrap();
    assert_eq!(on_gpu.token_counts, on_cpu.token_counts);
    for (text, (a, b)) in texts.iter().zip(on_gpu.vectors.iter().zip(&on_cpu.vectors)) {
        let difference = largest_gap(a, b);
        assert!(
            difference < 1e-5,
            "{text:?}: backends differ by {difference:e}"
        );
    }
}

/// Checks every sentence and a long text against the naive reference; returns the
/// longest sequence's token count (0 when the device was absent and the test skipped).
fn assert_matches_reference(
    dir: &Path,
    weights: &TinyWeights,
    pooling: Pooling,
    device: DeviceChoice,
) -> usize {
    let test = format!("{device:?} backend vs reference ({pooling:?})");
    let Some(engine) = load_on(&test, dir, device) else {
        return 0;
    };
    assert_eq!(engine.dimension(), HIDDEN);
    let long = "the big red car runs over the small blue house and the tree ".repeat(3);
    let mut texts: Vec<&str> = SENTENCES.to_vec();
    texts.push(&long);
    let embeddings = engine.embed(&texts).unwrap();
    let ids = engine.tokenize(&texts).unwrap();
    for ((text, vector), ids) in texts.iter().zip(&embeddings.vectors).zip(&ids) {
        let expected = reference_embedding(weights, ids, pooling);
        let difference = max_difference(vector, &expected);
        eprintln!(
            "{pooling:?} {text:?}: {} tokens, max difference {difference:e}",
            ids.len()
        );
        assert!(
            difference < 1e-5,
            "{text:?}: max difference {difference:e} from the reference"
        );
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?} is not unit length");
    }
    embeddings.token_counts.iter().copied().max().unwrap_or(0)
}

#[test]
fn a_sentence_embeds_the_same_alone_and_in_any_batch_on_the_cpu() {
    assert_batch_independent("cpu-batch", DeviceChoice::Cpu);
}

#[test]
fn a_sentence_embeds_the_same_alone_and_in_any_batch_on_the_gpu() {
    assert_batch_independent("gpu-batch", DeviceChoice::Gpu);
}

/// Batch composition, padding, and (on the GPU) workspace reallocation between calls
/// of different sizes change nothing.
fn assert_batch_independent(name: &str, device: DeviceChoice) {
    let weights = TinyWeights::generate(4);
    let dir = tiny_model_dir(name, &weights, &TinyModelSpec::default());
    let Some(engine) = load_on(name, &dir.path, device) else {
        return;
    };
    let sentence = "A man is eating food.";
    let alone = engine.embed(&[sentence]).unwrap().vectors.remove(0);
    let long = "the cat sat on the mat and the dog runs in the park ".repeat(4);
    let batch = [
        long.as_str(),
        "hello",
        sentence,
        "The quick brown fox jumps over the lazy dog!",
    ];
    let batched = engine.embed(&batch).unwrap();
    let difference = largest_gap(&alone, &batched.vectors[2]);
    assert!(
        difference <= 1e-6,
        "batch changed the vector by {difference:e}"
    );
    // A batch larger than one backend call gives the same vectors too.
    let many: Vec<&str> = std::iter::repeat_n(sentence, 70).collect();
    let vectors = engine.embed(&many).unwrap().vectors;
    assert_eq!(vectors.len(), 70);
    for vector in &vectors {
        let difference = largest_gap(&alone, vector);
        assert!(
            difference <= 1e-6,
            "large batch changed the vector by {difference:e}"
        );
    }
    assert!(engine.embed::<&str>(&[]).unwrap().vectors.is_empty());
}

#[test]
fn missing_and_inconsistent_files_are_named_in_the_error() {
    let weights = TinyWeights::generate(5);

    let dir = tiny_model_dir("missing", &weights, &TinyModelSpec::default());
    std::fs::remove_file(dir.path.join("tokenizer.json")).unwrap();
    let error = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap_err();
    assert!(matches!(error, EngineError::MissingFile { .. }), "{error}");
    assert!(error.to_string().contains("tokenizer.json"), "{error}");

    std::fs::remove_file(dir.path.join("1_Pooling/config.json")).unwrap();
    let error = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap_err();
    assert!(
        error.to_string().contains("1_Pooling/config.json"),
        "{error}"
    );

    let mut config = bert_config();
    config["num_attention_heads"] = json!(5);
    let spec = TinyModelSpec {
        config,
        ..TinyModelSpec::default()
    };
    let dir = tiny_model_dir("heads", &weights, &spec);
    let error = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap_err();
    assert!(
        matches!(error, EngineError::InconsistentModel { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("config.json") && error.to_string().contains("divisible"),
        "{error}"
    );

    let mut config = bert_config();
    config["intermediate_size"] = json!(48);
    let spec = TinyModelSpec {
        config,
        ..TinyModelSpec::default()
    };
    let dir = tiny_model_dir("shape", &weights, &spec);
    let error = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap_err();
    assert!(
        matches!(error, EngineError::InvalidWeights { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("encoder.layer.0.intermediate.dense.weight")
            && error.to_string().contains("model.safetensors"),
        "{error}"
    );

    let spec = TinyModelSpec {
        skip_tensor: Some("encoder.layer.1.attention.self.key.bias"),
        ..TinyModelSpec::default()
    };
    let dir = tiny_model_dir("tensor", &weights, &spec);
    let error = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("encoder.layer.1.attention.self.key.bias is missing"),
        "{error}"
    );

    let mut config = bert_config();
    config["hidden_act"] = json!("relu");
    let spec = TinyModelSpec {
        config,
        ..TinyModelSpec::default()
    };
    let dir = tiny_model_dir("act", &weights, &spec);
    let error = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap_err();
    assert!(error.to_string().contains("hidden_act"), "{error}");

    let dir = tiny_model_dir("json", &weights, &TinyModelSpec::default());
    std::fs::write(dir.path.join("sentence_bert_config.json"), "{").unwrap();
    let error = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap_err();
    assert!(matches!(error, EngineError::InvalidJson { .. }), "{error}");
    assert!(
        error.to_string().contains("sentence_bert_config.json"),
        "{error}"
    );
}

#[test]
fn device_choice_parses_and_auto_never_picks_a_software_adapter() {
    assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
    assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
    assert_eq!("gpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Gpu);
    let error = "tpu".parse::<DeviceChoice>().unwrap_err();
    assert!(error.to_string().contains("tpu"), "{error}");

    let weights = TinyWeights::generate(6);
    let dir = tiny_model_dir("device", &weights, &TinyModelSpec::default());
    let info = EmbeddingEngine::load(&dir.path, DeviceChoice::Auto, Precision::F32)
        .unwrap()
        .backend_info();
    // lavapipe would be far slower than the CPU backend: auto only takes real GPUs.
    match info.backend {
        "cpu" => assert_eq!(info.device_type, "cpu"),
        "gpu" => assert_ne!(info.device_type, "cpu", "{info:?}"),
        other => panic!("unknown backend {other}"),
    }
    let cpu = EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32)
        .unwrap()
        .backend_info();
    assert_eq!((cpu.backend, cpu.device_type.as_str()), ("cpu", "cpu"));
}

#[test]
fn the_embed_command_prints_dimensions_tokens_and_time() {
    let weights = TinyWeights::generate(7);
    let dir = tiny_model_dir("command", &weights, &TinyModelSpec::default());
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["embed", "--device", "cpu", "--model-dir"])
        .arg(&dir.path)
        .args(["A man is eating food.", "hello"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("32 dimensions"), "{stdout}");
    assert!(stdout.contains("   8 tokens"), "{stdout}");
    assert!(stdout.contains("   3 tokens"), "{stdout}");
    assert!(
        stdout.contains("embedded 2 text(s), 11 tokens, in"),
        "{stdout}"
    );

    // On the GPU: the same figures, or one clear sentence when there is no adapter.
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["embed", "--device", "gpu", "--model-dir"])
        .arg(&dir.path)
        .arg("hello")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        assert!(stdout.contains("   3 tokens"), "{stdout}");
    } else {
        assert!(stderr.contains("no GPU adapter was found"), "{stderr}");
        skip("the_embed_command on the GPU", "no GPU adapter");
    }
}

// ---------------------------------------------------------------------------
// Parity with sentence-transformers on the real model
// ---------------------------------------------------------------------------

/// Token ids and vectors sentence-transformers 6.2 produced for this model (with the
/// versions that produced them inside the file).
fn reference_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json")
}

/// Long passages (167 and 245 tokens), unicode, SQL-looking text and a word
/// repeated, from `scripts/reference_passages.py`.
fn passages_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_passages.json")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn real_model_matches_sentence_transformers_on_the_cpu() {
    assert_real_model_parity(
        "real_model_on_the_cpu",
        DeviceChoice::Cpu,
        Precision::F32,
        "f32",
    );
}

#[test]
fn real_model_matches_sentence_transformers_on_the_cpu_with_bf16_weights() {
    assert_real_model_parity(
        "real_model_on_the_cpu_in_bf16",
        DeviceChoice::Cpu,
        Precision::Bf16,
        "bf16",
    );
}

#[test]
fn real_model_matches_sentence_transformers_on_the_gpu() {
    assert_real_model_parity(
        "real_model_on_the_gpu",
        DeviceChoice::Gpu,
        Precision::F32,
        "f32",
    );
}

/// Half-width weights on the GPU are f16 (WGSL has no bf16), held to bf16's bound.
#[test]
fn real_model_matches_sentence_transformers_on_the_gpu_with_f16_weights() {
    assert_real_model_parity(
        "real_model_on_the_gpu_in_f16",
        DeviceChoice::Gpu,
        Precision::Bf16,
        "f16",
    );
}

/// How close a precision must come to sentence-transformers: f32 to rounding,
/// half-width weights (bf16 keeps 8 bits of mantissa, f16 11) to the issue's
/// cos ≥ 0.9995.
struct Tolerance {
    max_difference: f64,
    min_cosine: f64,
    pair_difference: f64,
}

fn tolerance(precision: Precision) -> Tolerance {
    match precision {
        Precision::F32 => Tolerance {
            max_difference: 1e-4,
            min_cosine: 0.9999,
            pair_difference: 1e-4,
        },
        Precision::Bf16 => Tolerance {
            max_difference: 1e-2,
            min_cosine: 0.9995,
            pair_difference: 2e-3,
        },
    }
}

/// Embeds the fixtures' texts on `device` asking for `precision` and checks the
/// backend stored the weights as `stored` and matched sentence-transformers.
fn assert_real_model_parity(test: &str, device: DeviceChoice, precision: Precision, stored: &str) {
    let model_dir = real_model_dir();
    if !model_dir.join("model.safetensors").is_file() {
        let reason = format!(
            "no model in {} (run `task model-fetch`)",
            model_dir.display()
        );
        skip(test, &reason);
        return;
    }
    let Some(engine) = load_in(test, &model_dir, device, precision) else {
        return;
    };
    assert_eq!(engine.backend_info().precision, stored);
    assert_eq!(engine.dimension(), 384);
    let tolerance = tolerance(precision);
    let sentence = assert_matches_fixture(&engine, &reference_fixture(), &tolerance, stored);
    assert_matches_fixture(&engine, &passages_fixture(), &tolerance, stored);
    // The first sentence again, in a batch with a long passage: the same vector.
    let alone = engine.embed(&[sentence.as_str()]).unwrap();
    let long = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(12);
    let batched = engine.embed(&[long.as_str(), sentence.as_str()]).unwrap();
    let difference = largest_gap(&alone.vectors[0], &batched.vectors[1]);
    assert!(
        difference <= 1e-6,
        "batch changed the vector by {difference:e}"
    );
}

/// Checks `engine`'s token ids, vectors and pair similarities against one
/// fixture of sentence-transformers' output; returns its first text.
fn assert_matches_fixture(
    engine: &EmbeddingEngine,
    fixture: &Path,
    tolerance: &Tolerance,
    stored: &str,
) -> String {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let sentences = reference["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let ids = engine.tokenize(&texts).unwrap();
    let embeddings = engine.embed(&texts).unwrap();
    for (index, sentence) in sentences.iter().enumerate() {
        let expected_ids: Vec<u32> = serde_json::from_value(sentence["input_ids"].clone()).unwrap();
        assert_eq!(ids[index], expected_ids, "token ids of {:?}", texts[index]);
        assert_eq!(embeddings.token_counts[index], expected_ids.len());
        let expected: Vec<f64> = serde_json::from_value(sentence["embedding"].clone()).unwrap();
        let difference = max_difference(&embeddings.vectors[index], &expected);
        let expected_f32: Vec<f32> = expected.iter().map(|v| *v as f32).collect();
        let similarity = cosine(&embeddings.vectors[index], &expected_f32);
        eprintln!(
            "real model ({stored}) {:?}: max difference {difference:e}, cosine {similarity:.7}",
            texts[index]
        );
        assert!(
            difference <= tolerance.max_difference,
            "{:?}: max difference {difference:e}",
            texts[index]
        );
        assert!(
            similarity >= tolerance.min_cosine,
            "{:?}: cosine {similarity}",
            texts[index]
        );
    }
    for (pair, expected) in reference["cosine_pairs"].as_object().unwrap() {
        let (a, b) = pair.split_once('-').unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        let similarity = cosine(&embeddings.vectors[a], &embeddings.vectors[b]);
        let expected = expected.as_f64().unwrap();
        assert!(
            (similarity - expected).abs() <= tolerance.pair_difference,
            "pair {pair}: {similarity} vs {expected}"
        );
    }
    texts[0].to_owned()
}
