//! The wgpu backend: the BERT forward pass as WGSL compute kernels (tiled matrix
//! multiply with fused bias/GELU/residual, layer norm, masked softmax attention,
//! pooling with L2 normalisation), f32 throughout.
//!
//! Like the CPU backend it packs sequences: padding never reaches a kernel, and
//! attention reads only the keys of the query's own sequence, so a vector does not
//! depend on its batch. Weights are uploaded once; the activation workspace grows to
//! the largest pass seen and is reused. One pass is one command submission followed
//! by a single read-back of the pooled vectors.

mod buffers;
mod device;
mod kernels;

use std::sync::Mutex;

use super::backend::{BackendInfo, EncoderBackend};
use super::config::{BertConfig, Pooling};
use super::error::EngineError;
use super::tokenizer::TokenBatch;
use super::weights::BertWeights;
use buffers::{GpuLayer, GpuLayerNorm, GpuLinear, GpuWeights, Workspace, to_u32};
pub use device::AdapterPolicy;
use kernels::{
    ATTENTION_MAX_HEAD_SIZE, ATTENTION_MAX_KEYS, FLAG_GELU, FLAG_RESIDUAL, Kernel, Kernels,
    LINEAR_TILE, PARAMS_SIZE, PARAMS_SLOT, POOL_CLS, Params,
};

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

/// What the matrix-multiply kernel does after adding the bias.
#[derive(Clone, Copy)]
enum Epilogue<'pass> {
    /// Nothing more.
    Bias,
    /// Apply GELU (the feed-forward expansion).
    Gelu,
    /// Add this `rows × out_features` buffer (the residual connections).
    Residual(&'pass wgpu::Buffer),
}

/// One kernel launch: its parameters, its buffers in binding order (from binding 1;
/// binding 0 is the parameter slot) and its grid.
struct Dispatch<'pass> {
    kernel: &'pass Kernel,
    params: Params,
    buffers: Vec<&'pass wgpu::Buffer>,
    workgroups: [u32; 3],
}

impl GpuBackend {
    /// Opens an adapter allowed by `policy`, compiles the kernels and uploads `weights`.
    pub fn new(
        config: &BertConfig,
        weights: &BertWeights,
        policy: AdapterPolicy,
    ) -> Result<Self, EngineError> {
        if config.max_positions > ATTENTION_MAX_KEYS || config.head_size() > ATTENTION_MAX_HEAD_SIZE
        {
            return Err(EngineError::Gpu(format!(
                "the GPU kernels handle sequences up to {ATTENTION_MAX_KEYS} positions and heads up \
                 to {ATTENTION_MAX_HEAD_SIZE} wide; this model has {} and {}: use the CPU backend",
                config.max_positions,
                config.head_size()
            )));
        }
        let opened = device::open(policy)?;
        let max_binding = usize::try_from(
            opened
                .limits
                .max_storage_buffer_binding_size
                .min(opened.limits.max_buffer_size),
        )
        .unwrap_or(usize::MAX);
        let largest_weight = [
            config.vocab_size,
            config.max_positions,
            config.intermediate_size,
            3 * config.hidden_size,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            * config.hidden_size
            * std::mem::size_of::<f32>();
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
        let kernels = Kernels::compile(&opened.device)?;
        let scope = opened
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let gpu_weights = GpuWeights::upload(&opened.device, weights);
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(EngineError::Gpu(format!("uploading the weights: {error}")));
        }
        Ok(Self {
            device: opened.device,
            queue: opened.queue,
            info: opened.info,
            config: config.clone(),
            kernels,
            weights: gpu_weights,
            max_tokens_per_pass,
            workspace: Mutex::new(None),
        })
    }

    /// Embeds the sequences of `batch` in passes that fit the device's limits.
    fn encode_all(
        &self,
        batch: &TokenBatch,
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut workspace = self
            .workspace
            .lock()
            .map_err(|_| EngineError::Gpu("an earlier GPU call panicked".into()))?;
        let mut vectors = Vec::with_capacity(batch.len());
        let mut pass: Vec<&[u32]> = Vec::new();
        let mut pass_tokens = 0;
        for index in 0..batch.len() {
            let sequence = batch.sequence(index);
            if pass_tokens + sequence.len() > self.max_tokens_per_pass {
                vectors.extend(self.run_pass(&mut workspace, &pass, pass_tokens, pooling)?);
                pass.clear();
                pass_tokens = 0;
            }
            pass.push(sequence);
            pass_tokens += sequence.len();
        }
        if !pass.is_empty() {
            vectors.extend(self.run_pass(&mut workspace, &pass, pass_tokens, pooling)?);
        }
        Ok(vectors)
    }

    /// One submission: upload the token table, run every kernel, read the vectors back.
    fn run_pass(
        &self,
        workspace: &mut Option<Workspace>,
        sequences: &[&[u32]],
        tokens: usize,
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let workspace = self.workspace_for(workspace, tokens, sequences.len());
        let (token_table, spans) = token_tables(sequences);
        self.queue.write_buffer(
            &workspace.token_table,
            0,
            bytemuck::cast_slice(&token_table),
        );
        self.queue
            .write_buffer(&workspace.spans, 0, bytemuck::cast_slice(&spans));
        let dispatches = self.plan(workspace, tokens, sequences.len(), pooling);
        let mut slots = vec![0u8; dispatches.len() * PARAMS_SLOT as usize];
        for (slot, dispatch) in slots
            .chunks_exact_mut(PARAMS_SLOT as usize)
            .zip(&dispatches)
        {
            slot[..PARAMS_SIZE as usize].copy_from_slice(&dispatch.params.bytes());
        }
        self.queue.write_buffer(&workspace.params, 0, &slots);

        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let bind_groups: Vec<wgpu::BindGroup> = dispatches
            .iter()
            .enumerate()
            .map(|(index, dispatch)| self.bind_group(workspace, index, dispatch))
            .collect();
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("encoder-forward"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for (dispatch, bind_group) in dispatches.iter().zip(&bind_groups) {
                pass.set_pipeline(&dispatch.kernel.pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                let [x, y, z] = dispatch.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        let pooled_bytes = (sequences.len() * self.config.hidden_size * 4) as u64;
        encoder.copy_buffer_to_buffer(&workspace.pooled, 0, &workspace.readback, 0, pooled_bytes);
        self.queue.submit([encoder.finish()]);
        let errors = [
            pollster::block_on(memory.pop()),
            pollster::block_on(validation.pop()),
        ];
        if let Some(error) = errors.into_iter().flatten().next() {
            return Err(EngineError::GpuScope(error));
        }
        let values = self.read_back(&workspace.readback, pooled_bytes)?;
        Ok(values
            .chunks_exact(self.config.hidden_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The workspace, reallocated (doubling) when this pass does not fit it.
    fn workspace_for<'slot>(
        &self,
        slot: &'slot mut Option<Workspace>,
        tokens: usize,
        sequences: usize,
    ) -> &'slot Workspace {
        // Buffers too small for this pass are freed before larger ones are made.
        let outgrown = slot.take_if(|workspace| !workspace.fits(tokens, sequences));
        let (token_capacity, sequence_capacity) = outgrown.map_or((0, 0), |workspace| {
            (workspace.token_capacity, workspace.sequence_capacity)
        });
        slot.get_or_insert_with(|| {
            Workspace::new(
                &self.device,
                &self.config,
                (token_capacity * 2)
                    .min(self.max_tokens_per_pass)
                    .max(tokens),
                (sequence_capacity * 2).max(sequences),
                self.dispatch_count(),
            )
        })
    }

    /// Dispatches per pass: embeddings (2), seven per layer, pooling (1).
    fn dispatch_count(&self) -> usize {
        3 + 7 * self.config.layers
    }

    /// The kernel launches of one forward pass, in order.
    fn plan<'pass>(
        &'pass self,
        workspace: &'pass Workspace,
        tokens: usize,
        sequences: usize,
        pooling: Pooling,
    ) -> Vec<Dispatch<'pass>> {
        let config = &self.config;
        let kernels = &self.kernels;
        let weights = &self.weights;
        let rows = to_u32(tokens);
        let mut dispatches = Vec::with_capacity(self.dispatch_count());
        dispatches.push(Dispatch {
            kernel: &kernels.embed,
            params: self.row_params(rows),
            buffers: vec![
                &weights.word_embeddings,
                &weights.position_embeddings,
                &weights.token_type_embeddings,
                &workspace.token_table,
                &workspace.hidden,
            ],
            workgroups: [rows, 1, 1],
        });
        dispatches.push(self.layer_norm(rows, &workspace.hidden, &weights.embedding_norm));
        for layer in &weights.layers {
            dispatches.extend(self.plan_layer(layer, workspace, rows));
        }
        dispatches.push(Dispatch {
            kernel: &kernels.pool,
            params: Params {
                rows: to_u32(sequences),
                cols: to_u32(config.hidden_size),
                flags: match pooling {
                    Pooling::Mean => 0,
                    Pooling::Cls => POOL_CLS,
                },
                ..Params::default()
            },
            buffers: vec![&workspace.hidden, &workspace.spans, &workspace.pooled],
            workgroups: [to_u32(sequences), 1, 1],
        });
        dispatches
    }

    /// One encoder layer: QKV projection, attention, output projection with the
    /// residual, norm, feed-forward expansion with GELU, contraction with the
    /// residual, norm.
    fn plan_layer<'pass>(
        &'pass self,
        layer: &'pass GpuLayer,
        workspace: &'pass Workspace,
        rows: u32,
    ) -> [Dispatch<'pass>; 7] {
        let config = &self.config;
        let attention = Dispatch {
            kernel: &self.kernels.attention,
            params: Params {
                rows,
                cols: to_u32(config.hidden_size),
                heads: to_u32(config.heads),
                head_size: to_u32(config.head_size()),
                scale: 1.0 / (config.head_size() as f32).sqrt(),
                ..Params::default()
            },
            buffers: vec![&workspace.qkv, &workspace.token_table, &workspace.context],
            workgroups: [rows, to_u32(config.heads), 1],
        };
        [
            self.linear(
                &layer.qkv,
                rows,
                &workspace.hidden,
                Epilogue::Bias,
                &workspace.qkv,
            ),
            attention,
            self.linear(
                &layer.attention_output,
                rows,
                &workspace.context,
                Epilogue::Residual(&workspace.hidden),
                &workspace.attended,
            ),
            self.layer_norm(rows, &workspace.attended, &layer.attention_norm),
            self.linear(
                &layer.intermediate,
                rows,
                &workspace.attended,
                Epilogue::Gelu,
                &workspace.expanded,
            ),
            self.linear(
                &layer.output,
                rows,
                &workspace.expanded,
                Epilogue::Residual(&workspace.attended),
                &workspace.hidden,
            ),
            self.layer_norm(rows, &workspace.hidden, &layer.output_norm),
        ]
    }

    /// Parameters of the row-wise kernels (embedding, layer norm).
    fn row_params(&self, rows: u32) -> Params {
        Params {
            rows,
            cols: to_u32(self.config.hidden_size),
            epsilon: self.config.layer_norm_eps,
            ..Params::default()
        }
    }

    /// Layer norm of `buffer`'s rows, in place.
    fn layer_norm<'pass>(
        &'pass self,
        rows: u32,
        buffer: &'pass wgpu::Buffer,
        norm: &'pass GpuLayerNorm,
    ) -> Dispatch<'pass> {
        Dispatch {
            kernel: &self.kernels.layer_norm,
            params: self.row_params(rows),
            buffers: vec![&norm.gamma, &norm.beta, buffer],
            workgroups: [rows, 1, 1],
        }
    }

    /// `output = epilogue(input·Wᵀ + b)`.
    fn linear<'pass>(
        &'pass self,
        linear: &'pass GpuLinear,
        rows: u32,
        input: &'pass wgpu::Buffer,
        epilogue: Epilogue<'pass>,
        output: &'pass wgpu::Buffer,
    ) -> Dispatch<'pass> {
        let (flags, residual) = match epilogue {
            // Without a residual the bias stands in for it: the binding must hold a
            // buffer, and the kernel does not read it.
            Epilogue::Bias => (0, &linear.bias),
            Epilogue::Gelu => (FLAG_GELU, &linear.bias),
            Epilogue::Residual(residual) => (FLAG_RESIDUAL, residual),
        };
        Dispatch {
            kernel: &self.kernels.linear,
            params: Params {
                rows,
                cols: linear.out_features,
                inner: linear.in_features,
                flags,
                ..Params::default()
            },
            buffers: vec![input, &linear.weight, &linear.bias, residual, output],
            workgroups: [
                linear.out_features.div_ceil(LINEAR_TILE),
                rows.div_ceil(LINEAR_TILE),
                1,
            ],
        }
    }

    fn bind_group(
        &self,
        workspace: &Workspace,
        index: usize,
        dispatch: &Dispatch<'_>,
    ) -> wgpu::BindGroup {
        let params = wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &workspace.params,
                offset: index as u64 * PARAMS_SLOT,
                size: wgpu::BufferSize::new(PARAMS_SIZE),
            }),
        };
        let entries: Vec<wgpu::BindGroupEntry<'_>> = std::iter::once(params)
            .chain(dispatch.buffers.iter().enumerate().map(|(index, buffer)| {
                wgpu::BindGroupEntry {
                    binding: to_u32(index + 1),
                    resource: buffer.as_entire_binding(),
                }
            }))
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &dispatch.kernel.layout,
            entries: &entries,
        })
    }

    /// Maps the read-back buffer and copies out `bytes` of f32s.
    fn read_back(&self, readback: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>, EngineError> {
        let slice = readback.slice(..bytes);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            // The receiver waits below; it cannot be gone.
            let _ = sender.send(result);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|error| EngineError::Gpu(format!("waiting for the GPU: {error}")))?;
        receiver
            .recv()
            .map_err(|_| EngineError::Gpu("the read-back was dropped".into()))?
            .map_err(|error| EngineError::Gpu(format!("reading the vectors back: {error}")))?;
        let values = {
            let view = slice
                .get_mapped_range()
                .map_err(|error| EngineError::Gpu(format!("reading the vectors back: {error}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        readback.unmap();
        Ok(values)
    }
}

/// Per token `[id, position, sequence start, sequence length]` and per sequence
/// `[first token, token count]`, as the kernels read them.
fn token_tables(sequences: &[&[u32]]) -> (Vec<u32>, Vec<u32>) {
    let mut tokens = Vec::new();
    let mut spans = Vec::with_capacity(sequences.len() * 2);
    let mut start = 0;
    for sequence in sequences {
        let length = to_u32(sequence.len());
        for (position, &id) in sequence.iter().enumerate() {
            tokens.extend([id, to_u32(position), start, length]);
        }
        spans.extend([start, length]);
        start += length;
    }
    (tokens, spans)
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
