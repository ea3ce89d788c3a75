//! Inference: AI features computed in-process. For now only the text-embedding
//! engine, a library the inference service will drive.

pub mod engine;
