//! The wgpu backend: the BERT forward pass as WGSL compute kernels (tiled matrix
//! multiply with fused bias/GELU/residual, layer norm, masked softmax attention,
//! pooling with L2 normalisation). Weights are f32, or f16 where `bf16` is asked for
//! and the adapter has `SHADER_F16`; activations and accumulation are f32 throughout.
//!
//! Like the CPU backend it packs sequences: padding never reaches a kernel, and
//! attention reads only the keys of the query's own sequence, so a vector does not
//! depend on its batch. Weights are uploaded once; the activation workspace grows to
//! the largest pass seen and is reused. One pass is one command submission followed
//! by a single read-back of the pooled vectors.
//!
//! Here the backend is opened and answers [`EncoderBackend`]; `plan` lists a pass's
//! kernel launches and `pass` runs them; `buffers`, `kernels` and `device` hold the
//! device memory, the shaders and the adapter choice.

mod buffers;
mod device;
mod kernels;
mod pass;
mod plan;

use std::sync::Mutex;

use super::backend::{BackendInfo, EncoderBackend};
use super::config::{BertConfig, Pooling};
use super::error::EngineError;
use super::tokenizer::TokenBatch;
use super::weights::BertWeights;
use buffers::{GpuWeights, Workspace};
pub use device::AdapterPolicy;
use device::OpenedDevice;
use kernels::{ATTENTION_MAX_HEAD_SIZE, Kernels, WeightFormat};
use tessera_kernels::Precision;

/// The BERT encoder on a wgpu device.
#[derive(Debug)]
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: BackendInfo,
    config: BertConfig,
    kernels: Kernels,
    weights: GpuWeights,
    /// Most tokens one pass may hold: the widest activation must fit one binding,
    /// and one workgroup per token must fit one dispatch dimension.
    max_tokens_per_pass: usize,
    workspace: Mutex<Option<Workspace>>,
}

impl GpuBackend {
    /// Opens an adapter allowed by `policy`, compiles the kernels and uploads
    /// `weights`, half-width (f16) when `precision` asks and the adapter can.
    pub fn new(
        config: &BertConfig,
        weights: &BertWeights,
        policy: AdapterPolicy,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        check_kernel_limits(config)?;
        let opened = device::open(policy, precision)?;
        let max_tokens_per_pass = pass_capacity(config, &opened)?;
        let kernels = Kernels::compile(&opened.device, opened.weight_format, config.head_size())?;
        let weights = upload_weights(&opened.device, weights, opened.weight_format)?;
        Ok(Self {
            device: opened.device,
            queue: opened.queue,
            info: opened.info,
            config: config.clone(),
            kernels,
            weights,
            max_tokens_per_pass,
            workspace: Mutex::new(None),
        })
    }
}

/// The attention kernel keeps a head's query and weighted values in registers, which
/// bounds the head width; a model beyond it is refused before any device is opened.
fn check_kernel_limits(config: &BertConfig) -> Result<(), EngineError> {
    if config.head_size() > ATTENTION_MAX_HEAD_SIZE {
        return Err(EngineError::Gpu(format!(
            "the GPU kernels handle heads up to {ATTENTION_MAX_HEAD_SIZE} wide; this model's \
             are {}: use the CPU backend",
            config.head_size()
        )));
    }
    Ok(())
}

/// Most tokens one pass may hold on `opened`, or an error when the device cannot
/// bind the model's largest weight or a pass of one full-length sequence.
fn pass_capacity(config: &BertConfig, opened: &OpenedDevice) -> Result<usize, EngineError> {
    let max_binding = usize::try_from(
        opened
            .limits
            .max_storage_buffer_binding_size
            .min(opened.limits.max_buffer_size),
    )
    .unwrap_or(usize::MAX);
    let largest_weight = largest_weight_bytes(config);
    // The widest activation row (QKV or the feed-forward) bounds a pass's tokens.
    let widest_row = (3 * config.hidden_size).max(config.intermediate_size);
    let max_tokens_per_pass = (max_binding / (widest_row * std::mem::size_of::<f32>()))
        .min(opened.limits.max_compute_workgroups_per_dimension as usize);
    if largest_weight > max_binding || max_tokens_per_pass < config.max_positions {
        return Err(EngineError::Gpu(format!(
            "{} cannot bind buffers of {largest_weight} bytes this model needs \
             (its limit is {max_binding})",
            opened.info.adapter
        )));
    }
    Ok(max_tokens_per_pass)
}

/// Bytes of the largest weight matrix: every one is `hidden` wide, and the tallest
/// is the vocabulary, the positions, the feed-forward or the fused QKV.
fn largest_weight_bytes(config: &BertConfig) -> usize {
    [
        config.vocab_size,
        config.max_positions,
        config.intermediate_size,
        3 * config.hidden_size,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
        * config.hidden_size
        * std::mem::size_of::<f32>()
}

/// Uploads `weights` inside an out-of-memory scope, so a model too large for the
/// device is an error from `new` rather than an uncaptured one.
fn upload_weights(
    device: &wgpu::Device,
    weights: &BertWeights,
    format: WeightFormat,
) -> Result<GpuWeights, EngineError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let gpu_weights = GpuWeights::upload(device, weights, format);
    match pollster::block_on(scope.pop()) {
        Some(error) => Err(EngineError::Gpu(format!("uploading the weights: {error}"))),
        None => gpu_weights,
    }
}

impl EncoderBackend for GpuBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn encode(&self, batch: &TokenBatch, pooling: Pooling) -> Result<Vec<Vec<f32>>, EngineError> {
        batch.validate(&self.config)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.encode_all(batch, pooling)
    }
}
