//! Running the planned kernels: packing a batch into passes that fit the device,
//! uploading each pass's inputs, submitting it under error scopes and reading the
//! pooled vectors back. This is the only place a pass touches the queue.

use super::super::config::Pooling;
use super::super::error::EngineError;
use super::super::tokenizer::TokenBatch;
use super::GpuBackend;
use super::buffers::{Workspace, to_u32};
use super::kernels::{PARAMS_SIZE, PARAMS_SLOT};
use super::plan::Dispatch;

impl GpuBackend {
    /// Embeds the sequences of `batch` in passes that fit the device's limits.
    pub(super) fn encode_all(
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
        self.upload_tokens(workspace, sequences);
        let dispatches = self.plan(workspace, sequences, pooling);
        self.upload_params(workspace, &dispatches);
        let pooled_bytes = (sequences.len() * self.config.hidden_size * 4) as u64;
        self.submit(workspace, &dispatches, pooled_bytes)?;
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

    /// Writes the pass's token table and sequence spans, which every kernel indexes by.
    fn upload_tokens(&self, workspace: &Workspace, sequences: &[&[u32]]) {
        let (token_table, spans) = token_tables(sequences);
        self.queue.write_buffer(
            &workspace.token_table,
            0,
            bytemuck::cast_slice(&token_table),
        );
        self.queue
            .write_buffer(&workspace.spans, 0, bytemuck::cast_slice(&spans));
    }

    /// Writes each dispatch's parameters into its own [`PARAMS_SLOT`], the slot its
    /// bind group points at.
    fn upload_params(&self, workspace: &Workspace, dispatches: &[Dispatch<'_>]) {
        let mut slots = vec![0u8; dispatches.len() * PARAMS_SLOT as usize];
        for (slot, dispatch) in slots.chunks_exact_mut(PARAMS_SLOT as usize).zip(dispatches) {
            slot[..PARAMS_SIZE as usize].copy_from_slice(&dispatch.params.bytes());
        }
        self.queue.write_buffer(&workspace.params, 0, &slots);
    }

    /// Binds, records and submits the pass inside validation and out-of-memory error
    /// scopes, so a failure is this call's error rather than the uncaptured handler's.
    fn submit(
        &self,
        workspace: &Workspace,
        dispatches: &[Dispatch<'_>],
        pooled_bytes: u64,
    ) -> Result<(), EngineError> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let bind_groups: Vec<wgpu::BindGroup> = dispatches
            .iter()
            .enumerate()
            .map(|(index, dispatch)| self.bind_group(workspace, index, dispatch))
            .collect();
        let commands = self.record(workspace, dispatches, &bind_groups, pooled_bytes);
        self.queue.submit([commands]);
        let errors = [
            pollster::block_on(memory.pop()),
            pollster::block_on(validation.pop()),
        ];
        match errors.into_iter().flatten().next() {
            Some(error) => Err(EngineError::GpuScope(error)),
            None => Ok(()),
        }
    }

    /// Binding 0 is the dispatch's parameter slot, then its buffers in order.
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

    /// One compute pass running every dispatch, then the copy of the pooled vectors
    /// into the host-readable buffer.
    fn record(
        &self,
        workspace: &Workspace,
        dispatches: &[Dispatch<'_>],
        bind_groups: &[wgpu::BindGroup],
        pooled_bytes: u64,
    ) -> wgpu::CommandBuffer {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("encoder-forward"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for (dispatch, bind_group) in dispatches.iter().zip(bind_groups) {
                pass.set_pipeline(&dispatch.kernel.pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                let [x, y, z] = dispatch.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        encoder.copy_buffer_to_buffer(&workspace.pooled, 0, &workspace.readback, 0, pooled_bytes);
        encoder.finish()
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

/// Per token `[id, position]` and per sequence `[first token, token count]`, as
/// the kernels read them.
fn token_tables(sequences: &[&[u32]]) -> (Vec<u32>, Vec<u32>) {
    let mut tokens = Vec::new();
    let mut spans = Vec::with_capacity(sequences.len() * 2);
    let mut start = 0;
    for sequence in sequences {
        let length = to_u32(sequence.len());
        for (position, &id) in sequence.iter().enumerate() {
            tokens.extend([id, to_u32(position)]);
        }
        spans.extend([start, length]);
        start += length;
    }
    (tokens, spans)
}
