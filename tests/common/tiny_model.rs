//! A tiny BERT (2 layers, hidden 32, 4 heads, FFN 64, a 50-token WordPiece
//! vocabulary) with deterministic random weights, written to a temporary
//! directory in the sentence-transformers layout: the engine and the inference
//! API are tested with it, without the real model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;
use tessera::inference::engine::Pooling;

pub const LAYERS: usize = 2;
pub const HIDDEN: usize = 32;
pub const HEADS: usize = 4;
pub const INTERMEDIATE: usize = 64;
pub const MAX_POSITIONS: usize = 40;
pub const MAX_SEQ_LENGTH: usize = 24;
pub const EPS: f64 = 1e-12;

pub const VOCABULARY: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "man", "is", "eating", "food",
    "bread", "cat", "dog", "sat", "on", "mat", "quick", "brown", "fox", "jumps", "over", "lazy",
    "piece", "of", "runs", "in", "park", "and", "play", "##s", "##ing", "##ed", ".", ",", "!", "?",
    "hello", "world", "un", "##known", "big", "small", "red", "blue", "green", "tree", "house",
    "car", "sun",
];

pub const CLS_ID: u32 = 2;
pub const SEP_ID: u32 = 3;

// ---------------------------------------------------------------------------
// A tiny model on disk
// ---------------------------------------------------------------------------

/// A deterministic pseudo-random source (SplitMix64), so every run builds the same model.
pub struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }

    fn tensor(&mut self, len: usize, scale: f32, center: f32) -> Vec<f32> {
        (0..len).map(|_| center + self.uniform(scale)).collect()
    }
}

/// The tiny model's tensors by their unprefixed names.
pub struct TinyWeights(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl TinyWeights {
    pub fn generate(seed: u64) -> Self {
        let mut random = SplitMix(seed);
        let mut tensors = HashMap::new();
        let mut add = |name: String, shape: Vec<usize>, scale: f32, center: f32| {
            let len = shape.iter().product();
            tensors.insert(name, (shape, random.tensor(len, scale, center)));
        };
        let linear_scale = |inputs: usize| 1.7 / (inputs as f32).sqrt();
        add(
            "embeddings.word_embeddings.weight".into(),
            vec![VOCABULARY.len(), HIDDEN],
            1.0,
            0.0,
        );
        add(
            "embeddings.position_embeddings.weight".into(),
            vec![MAX_POSITIONS, HIDDEN],
            0.5,
            0.0,
        );
        add(
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
            0.3,
            0.0,
        );
        fn add_norm(add: &mut dyn FnMut(String, Vec<usize>, f32, f32), name: &str) {
            add(format!("{name}.weight"), vec![HIDDEN], 0.2, 1.0);
            add(format!("{name}.bias"), vec![HIDDEN], 0.1, 0.0);
        }
        add_norm(&mut add, "embeddings.LayerNorm");
        for layer in 0..LAYERS {
            let base = format!("encoder.layer.{layer}");
            for (name, outputs, inputs) in [
                ("attention.self.query", HIDDEN, HIDDEN),
                ("attention.self.key", HIDDEN, HIDDEN),
                ("attention.self.value", HIDDEN, HIDDEN),
                ("attention.output.dense", HIDDEN, HIDDEN),
                ("intermediate.dense", INTERMEDIATE, HIDDEN),
                ("output.dense", HIDDEN, INTERMEDIATE),
            ] {
                add(
                    format!("{base}.{name}.weight"),
                    vec![outputs, inputs],
                    linear_scale(inputs),
                    0.0,
                );
                add(format!("{base}.{name}.bias"), vec![outputs], 0.1, 0.0);
            }
            add_norm(&mut add, &format!("{base}.attention.output.LayerNorm"));
            add_norm(&mut add, &format!("{base}.output.LayerNorm"));
        }
        // Present in real checkpoints, unused by the encoder.
        add("pooler.dense.weight".into(), vec![HIDDEN, HIDDEN], 0.1, 0.0);
        add("pooler.dense.bias".into(), vec![HIDDEN], 0.1, 0.0);
        Self(tensors)
    }

    pub fn get(&self, name: &str) -> &[f32] {
        &self.0[name].1
    }

    /// The safetensors bytes, names prefixed with `prefix`, plus the I64 `position_ids`.
    pub fn to_safetensors(&self, prefix: &str, skip: Option<&str>) -> Vec<u8> {
        let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .0
            .iter()
            .filter(|(name, _)| Some(name.as_str()) != skip)
            .map(|(name, (shape, values))| {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (format!("{prefix}{name}"), Dtype::F32, shape.clone(), bytes)
            })
            .collect();
        let position_ids = (0..MAX_POSITIONS as i64)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        entries.push((
            format!("{prefix}embeddings.position_ids"),
            Dtype::I64,
            vec![1, MAX_POSITIONS],
            position_ids,
        ));
        let views = entries.iter().map(|(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        });
        safetensors::serialize(views, None).unwrap()
    }
}

/// A temporary model directory, removed when dropped.
pub struct TinyModelDir {
    /// The directory.
    pub path: PathBuf,
}

impl Drop for TinyModelDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What to write into a tiny model directory.
pub struct TinyModelSpec {
    /// The pooling `1_Pooling/config.json` declares.
    pub pooling: Pooling,
    /// A prefix for every tensor name (`bert.` in some checkpoints).
    pub prefix: &'static str,
    /// `config.json`.
    pub config: serde_json::Value,
    /// A tensor to leave out, to test the error.
    pub skip_tensor: Option<&'static str>,
    /// `sentence_bert_config.json`'s truncation length, at most [`MAX_POSITIONS`].
    pub max_seq_length: usize,
}

impl Default for TinyModelSpec {
    fn default() -> Self {
        Self {
            pooling: Pooling::Mean,
            prefix: "",
            config: bert_config(),
            skip_tensor: None,
            max_seq_length: MAX_SEQ_LENGTH,
        }
    }
}

pub fn bert_config() -> serde_json::Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": MAX_POSITIONS,
        "vocab_size": VOCABULARY.len(),
        "type_vocab_size": 2,
        "layer_norm_eps": EPS,
        "pad_token_id": 0,
        "position_embedding_type": "absolute"
    })
}

/// A WordPiece tokenizer.json like the real model's, including its trap: fixed
/// padding to 16 and truncation at 8, which the engine must override.
pub fn tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = VOCABULARY
        .iter()
        .enumerate()
        .map(|(id, token)| ((*token).to_owned(), json!(id)))
        .collect();
    let added: Vec<serde_json::Value> = VOCABULARY[..5]
        .iter()
        .enumerate()
        .map(|(id, token)| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": {"max_length": 8, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [CLS_ID], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [SEP_ID], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

pub fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

pub fn tiny_model_dir(name: &str, weights: &TinyWeights, spec: &TinyModelSpec) -> TinyModelDir {
    let path =
        std::env::temp_dir().join(format!("tessera-inference-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    write_json(&path.join("config.json"), &spec.config);
    write_json(&path.join("tokenizer.json"), &tokenizer_json());
    write_json(
        &path.join("sentence_bert_config.json"),
        &json!({"max_seq_length": spec.max_seq_length, "do_lower_case": false}),
    );
    write_json(
        &path.join("1_Pooling/config.json"),
        &json!({
            "word_embedding_dimension": HIDDEN,
            "pooling_mode_cls_token": spec.pooling == Pooling::Cls,
            "pooling_mode_mean_tokens": spec.pooling == Pooling::Mean,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false
        }),
    );
    std::fs::write(
        path.join("model.safetensors"),
        weights.to_safetensors(spec.prefix, spec.skip_tensor),
    )
    .unwrap();
    TinyModelDir { path }
}
