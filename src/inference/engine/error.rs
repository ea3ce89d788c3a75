//! Why the embedding engine could not load a model or embed texts.

use std::path::PathBuf;

/// Everything that can go wrong in the engine, each variant naming the file or
/// value at fault so an operator can fix the model directory without reading code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file the model layout requires is absent.
    #[error("model file {path} is missing ({what})")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What the file is for.
        what: &'static str,
    },
    /// A file exists but could not be read.
    #[error("cannot read model file {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed into the expected shape.
    #[error("model file {path} is not valid: {message}")]
    InvalidJson {
        /// The file at fault.
        path: PathBuf,
        /// The parser's explanation (field and position).
        message: String,
    },
    /// The files parse but disagree with each other or describe an unsupported model.
    #[error("model file {path}: {problem}")]
    InconsistentModel {
        /// The file holding the offending value.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The safetensors file is malformed or lacks a tensor the config requires.
    #[error("weights file {path}: {problem}")]
    InvalidWeights {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        problem: String,
    },
    /// The tokenizer could not be built from `tokenizer.json` or failed on an input.
    #[error("tokenizer {path}: {source}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizers crate said.
        #[source]
        source: tokenizers::Error,
    },
    /// `INFERENCE_DEVICE` or `--device` holds an unknown value.
    #[error("unknown inference device {0:?}: expected auto, gpu or cpu")]
    UnknownDevice(String),
    /// No wgpu adapter the device choice allows exists on this machine.
    #[error("{0}")]
    NoGpuAdapter(&'static str),
    /// The GPU backend failed: device creation, a kernel, memory or the read-back.
    #[error("GPU backend: {0}")]
    Gpu(String),
    /// A batch handed to a backend does not fit the model (a programming error upstream).
    #[error("invalid token batch: {0}")]
    InvalidBatch(String),
    /// The GPU reported an out-of-memory or validation error for a pass.
    #[error("GPU backend: {0}")]
    GpuScope(#[source] wgpu::Error),
    /// The CPU backend's thread pool could not be started.
    #[error("cannot start the inference thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// The thread that owns the engine could not be spawned.
    #[error("cannot start the inference thread: {0}")]
    Thread(#[source] std::io::Error),
}
