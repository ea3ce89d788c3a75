//! The text-embedding engine: a BERT sentence encoder (sentence-transformers layout)
//! that turns texts into unit-length vectors. It knows nothing of HTTP or the
//! database; the inference service drives it.
//!
//! Loading reads a model directory ([`ModelConfig`], [`TextTokenizer`],
//! [`BertWeights`]) and picks a backend ([`EncoderBackend`]: [`CpuBackend`] or
//! [`GpuBackend`]); [`EmbeddingEngine::embed`] tokenizes and runs it.

pub mod backend;
pub mod config;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod pooling;
pub mod tokenizer;
pub mod weights;

use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use backend::{BackendInfo, EncoderBackend};
pub use config::{BertConfig, ModelConfig, Pooling};
pub use cpu::CpuBackend;
pub use error::EngineError;
pub use gpu::{AdapterPolicy, GpuBackend};
pub use tessera_kernels::Precision;
pub use tokenizer::{TextTokenizer, TokenBatch, Tokenized};
pub use weights::BertWeights;

/// Where the model directory is when neither `--model-dir` nor `INFERENCE_MODEL_DIR` says.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

/// Sequences per backend call: bounds the activations' memory for large requests
/// without changing any result (a vector never depends on its batch).
const MAX_SEQUENCES_PER_CALL: usize = 64;

/// Which backend to run on, as chosen by `INFERENCE_DEVICE` or `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU when one is usable, else the CPU (never a software adapter).
    #[default]
    Auto,
    /// A GPU adapter, hardware first, a software one (Mesa lavapipe) if that is all
    /// there is; an error when there is none.
    Gpu,
    /// The CPU.
    Cpu,
}

impl FromStr for DeviceChoice {
    type Err = EngineError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "gpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            _ => Err(EngineError::UnknownDevice(value.to_owned())),
        }
    }
}

/// The vectors of one `embed` call, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One unit-length vector per input text.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the encoder saw per input (special tokens included, after truncation),
    /// which is what inference costs are measured in.
    pub token_counts: Vec<usize>,
}

/// A loaded model ready to embed texts; shareable across threads.
#[derive(Debug)]
pub struct EmbeddingEngine {
    config: ModelConfig,
    tokenizer: TextTokenizer,
    backend: Box<dyn EncoderBackend>,
    model_dir: PathBuf,
}

impl EmbeddingEngine {
    /// Loads the model in `dir` onto the chosen device, its weights stored
    /// in `precision` where the backend can, and logs where it runs.
    pub fn load(
        dir: &Path,
        device: DeviceChoice,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let config = ModelConfig::load(dir)?;
        let tokenizer = TextTokenizer::load(dir, config.max_seq_length)?;
        let backend = select_backend(dir, &config, device, precision)?;
        let info = backend.info();
        tracing::info!(
            model = %dir.display(),
            backend = info.backend,
            adapter = %info.adapter,
            api = %info.api,
            device_type = %info.device_type,
            precision = info.precision,
            "embedding engine ready"
        );
        Ok(Self {
            config,
            tokenizer,
            backend,
            model_dir: dir.to_owned(),
        })
    }

    /// Builds an engine from parts, e.g. a backend configured by the caller.
    pub fn from_parts(
        config: ModelConfig,
        tokenizer: TextTokenizer,
        backend: Box<dyn EncoderBackend>,
        model_dir: PathBuf,
    ) -> Self {
        Self {
            config,
            tokenizer,
            backend,
            model_dir,
        }
    }

    /// Length of every vector.
    pub fn dimension(&self) -> usize {
        self.config.bert.hidden_size
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The backend's name (`cpu`, `gpu`), for logs and responses.
    pub fn backend_name(&self) -> &'static str {
        self.backend.info().backend
    }

    /// What the backend runs on (adapter, API, device type).
    pub fn backend_info(&self) -> BackendInfo {
        self.backend.info()
    }

    /// The directory the model was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// Token ids of each text, as the encoder will see them.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>, EngineError> {
        self.tokenizer.encode(texts)
    }

    /// Token ids of each text, marking those cut at `max_seq_length`.
    pub fn tokenize_marking_truncation<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Tokenized>, EngineError> {
        self.tokenizer.encode_marking_truncation(texts)
    }

    /// How many tokens each whole text holds (special tokens included), past
    /// what the model reads.
    pub fn count_tokens<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<usize>, EngineError> {
        self.tokenizer.count_whole(texts)
    }

    /// A short name for the model: its directory's name (`all-MiniLM-L6-v2`).
    pub fn model_name(&self) -> String {
        model_name(&self.model_dir)
    }

    /// Unit-length embeddings of `texts`, in order.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings, EngineError> {
        let sequences = self.tokenizer.encode(texts)?;
        let vectors = self.embed_token_ids(&sequences)?;
        Ok(Embeddings {
            token_counts: sequences.iter().map(Vec::len).collect(),
            vectors,
        })
    }

    /// Unit-length embeddings of already tokenized sequences.
    pub fn embed_token_ids(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut vectors = Vec::with_capacity(sequences.len());
        for chunk in sequences.chunks(MAX_SEQUENCES_PER_CALL) {
            let batch = TokenBatch::from_sequences(chunk);
            vectors.extend(self.backend.encode(&batch, self.config.pooling)?);
        }
        Ok(vectors)
    }
}

/// The name a model directory's model goes by: the directory's own name.
pub fn model_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Picks the backend for `device`: `auto` tries a hardware GPU and falls back to the
/// CPU (saying why in the log), `gpu` takes any adapter or fails, `cpu` is the CPU.
/// `bf16` means half-width weights: bf16 on the CPU, f16 on the GPU (WGSL has no
/// bf16); a backend that cannot store them keeps f32 and logs why.
fn select_backend(
    dir: &Path,
    config: &ModelConfig,
    device: DeviceChoice,
    precision: Precision,
) -> Result<Box<dyn EncoderBackend>, EngineError> {
    let weights = BertWeights::load(dir, &config.bert)?;
    let gpu = |policy| {
        let backend = GpuBackend::new(&config.bert, &weights, policy, precision)?;
        Ok::<_, EngineError>(Box::new(backend) as Box<dyn EncoderBackend>)
    };
    match device {
        DeviceChoice::Cpu => cpu_backend(config, weights, precision),
        DeviceChoice::Gpu => gpu(AdapterPolicy::AllowSoftware),
        DeviceChoice::Auto => match gpu(AdapterPolicy::HardwareOnly) {
            Ok(backend) => Ok(backend),
            Err(error) => {
                tracing::info!(%error, "no usable hardware GPU: embedding on the CPU");
                cpu_backend(config, weights, precision)
            }
        },
    }
}

fn cpu_backend(
    config: &ModelConfig,
    weights: BertWeights,
    precision: Precision,
) -> Result<Box<dyn EncoderBackend>, EngineError> {
    Ok(Box::new(CpuBackend::new(
        config.bert.clone(),
        weights,
        None,
        precision,
    )?))
}
