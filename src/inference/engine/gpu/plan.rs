//! Which kernels one forward pass launches, in what order, over which buffers. The
//! plan is plain data, built without touching the device, so the pass's structure
//! reads in one place; `pass.rs` turns it into bind groups and a submission.

use super::super::config::Pooling;
use super::GpuBackend;
use super::buffers::{GpuLayer, GpuLayerNorm, GpuLinear, Workspace, to_u32};
use super::kernels::{
    ATTENTION_QUERY_BLOCK, FLAG_GELU, FLAG_RESIDUAL, Kernel, LINEAR_TILE, POOL_CLS, Params,
};

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

/// What sizes a pass's grids: its tokens (the row-wise kernels and the matrix
/// multiplies), its sequences (pooling) and its longest sequence (attention).
#[derive(Clone, Copy)]
struct PassShape {
    tokens: u32,
    sequences: u32,
    longest: u32,
}

impl PassShape {
    fn of(sequences: &[&[u32]]) -> Self {
        let lengths = sequences.iter().map(|sequence| sequence.len());
        Self {
            tokens: to_u32(lengths.clone().sum()),
            sequences: to_u32(sequences.len()),
            longest: to_u32(lengths.max().unwrap_or(0)),
        }
    }
}

/// One kernel launch: its parameters, its buffers in binding order (from binding 1;
/// binding 0 is the parameter slot) and its grid.
pub(super) struct Dispatch<'pass> {
    /// The pipeline to run.
    pub(super) kernel: &'pass Kernel,
    /// Its parameter block, uploaded to the dispatch's slot.
    pub(super) params: Params,
    /// Bound from binding 1 in this order.
    pub(super) buffers: Vec<&'pass wgpu::Buffer>,
    /// Workgroups along x, y and z.
    pub(super) workgroups: [u32; 3],
}

impl GpuBackend {
    /// Dispatches per pass: embeddings (2), seven per layer, pooling (1). The
    /// workspace sizes its parameter buffer by it.
    pub(super) fn dispatch_count(&self) -> usize {
        3 + 7 * self.config.layers
    }

    /// The kernel launches of one forward pass over `sequences` (token ids), in order.
    pub(super) fn plan<'pass>(
        &'pass self,
        workspace: &'pass Workspace,
        sequences: &[&[u32]],
        pooling: Pooling,
    ) -> Vec<Dispatch<'pass>> {
        let config = &self.config;
        let kernels = &self.kernels;
        let weights = &self.weights;
        let shape = PassShape::of(sequences);
        let rows = shape.tokens;
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
            dispatches.extend(self.plan_layer(layer, workspace, shape));
        }
        dispatches.push(Dispatch {
            kernel: &kernels.pool,
            params: Params {
                rows: shape.sequences,
                cols: to_u32(config.hidden_size),
                flags: match pooling {
                    Pooling::Mean => 0,
                    Pooling::Cls => POOL_CLS,
                },
                ..Params::default()
            },
            buffers: vec![&workspace.hidden, &workspace.spans, &workspace.pooled],
            workgroups: [shape.sequences, 1, 1],
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
        shape: PassShape,
    ) -> [Dispatch<'pass>; 7] {
        let rows = shape.tokens;
        [
            self.linear(
                &layer.qkv,
                rows,
                &workspace.hidden,
                Epilogue::Bias,
                &workspace.qkv,
            ),
            self.attention(shape, workspace),
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

    /// Self-attention of `workspace.qkv` into `workspace.context`, one workgroup per
    /// block of queries of one sequence in one head; the spans keep each query within
    /// its own sequence, and blocks past a shorter sequence's end return at once.
    fn attention<'pass>(
        &'pass self,
        shape: PassShape,
        workspace: &'pass Workspace,
    ) -> Dispatch<'pass> {
        let config = &self.config;
        Dispatch {
            kernel: &self.kernels.attention,
            params: Params {
                cols: to_u32(config.hidden_size),
                scale: 1.0 / (config.head_size() as f32).sqrt(),
                ..Params::default()
            },
            buffers: vec![&workspace.qkv, &workspace.spans, &workspace.context],
            workgroups: [
                shape.longest.div_ceil(ATTENTION_QUERY_BLOCK),
                to_u32(config.heads),
                shape.sequences,
            ],
        }
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
}
