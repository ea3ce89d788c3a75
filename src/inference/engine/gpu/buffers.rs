//! GPU memory: the model's weights, uploaded once, and the activation workspace,
//! allocated for the largest batch seen so far and reused by every later call.

use wgpu::util::DeviceExt;

use super::super::config::BertConfig;
use super::super::error::EngineError;
use super::super::weights::{BertWeights, LayerNormWeights, Linear};
use super::kernels::{PARAMS_SLOT, WeightFormat};

/// A dense layer on the device.
#[derive(Debug)]
pub struct GpuLinear {
    /// `out_features × in_features`, row-major, in the backend's [`WeightFormat`].
    pub weight: wgpu::Buffer,
    /// `out_features`.
    pub bias: wgpu::Buffer,
    /// Rows of `weight`.
    pub out_features: u32,
    /// Columns of `weight`.
    pub in_features: u32,
}

/// A layer norm's scale and shift on the device.
#[derive(Debug)]
pub struct GpuLayerNorm {
    /// Scale.
    pub gamma: wgpu::Buffer,
    /// Shift.
    pub beta: wgpu::Buffer,
}

/// One encoder layer on the device (see [`super::super::weights::EncoderLayer`]).
#[derive(Debug)]
pub struct GpuLayer {
    /// Fused query/key/value projection.
    pub qkv: GpuLinear,
    /// Attention output projection.
    pub attention_output: GpuLinear,
    /// Norm after the attention residual.
    pub attention_norm: GpuLayerNorm,
    /// Feed-forward expansion.
    pub intermediate: GpuLinear,
    /// Feed-forward contraction.
    pub output: GpuLinear,
    /// Norm after the feed-forward residual.
    pub output_norm: GpuLayerNorm,
}

/// Every weight of the encoder, resident on the device for the backend's lifetime:
/// the matrices and embedding tables in the backend's [`WeightFormat`], biases and
/// norms in f32.
#[derive(Debug)]
pub struct GpuWeights {
    /// `vocab × hidden`.
    pub word_embeddings: wgpu::Buffer,
    /// `max_positions × hidden`.
    pub position_embeddings: wgpu::Buffer,
    /// Token-type rows (only row 0 is read).
    pub token_type_embeddings: wgpu::Buffer,
    /// Norm over the summed embeddings.
    pub embedding_norm: GpuLayerNorm,
    /// The encoder layers, in order.
    pub layers: Vec<GpuLayer>,
}

impl GpuWeights {
    /// Copies `weights` to the device, storing matrices and tables as `format`;
    /// an error when a value does not fit it.
    pub fn upload(
        device: &wgpu::Device,
        weights: &BertWeights,
        format: WeightFormat,
    ) -> Result<Self, EngineError> {
        let table = |name: &str, values: &[f32]| {
            Ok::<_, EngineError>(storage(device, name, &format.encode(name, values)?))
        };
        let vector =
            |name: &str, values: &[f32]| storage(device, name, bytemuck::cast_slice(values));
        let linear = |name: &str, linear: &Linear| {
            Ok::<_, EngineError>(GpuLinear {
                weight: table(name, &linear.weight)?,
                bias: vector(name, &linear.bias),
                out_features: to_u32(linear.out_features),
                in_features: to_u32(linear.in_features),
            })
        };
        let norm = |name: &str, norm: &LayerNormWeights| GpuLayerNorm {
            gamma: vector(name, &norm.weight),
            beta: vector(name, &norm.bias),
        };
        Ok(Self {
            word_embeddings: table("word_embeddings", &weights.word_embeddings)?,
            position_embeddings: table("position_embeddings", &weights.position_embeddings)?,
            token_type_embeddings: table("token_type_embeddings", &weights.token_type_embeddings)?,
            embedding_norm: norm("embedding_norm", &weights.embedding_norm),
            layers: weights
                .layers
                .iter()
                .map(|layer| {
                    Ok(GpuLayer {
                        qkv: linear("qkv", &layer.qkv)?,
                        attention_output: linear("attention_output", &layer.attention_output)?,
                        attention_norm: norm("attention_norm", &layer.attention_norm),
                        intermediate: linear("intermediate", &layer.intermediate)?,
                        output: linear("output", &layer.output)?,
                        output_norm: norm("output_norm", &layer.output_norm),
                    })
                })
                .collect::<Result<_, EngineError>>()?,
        })
    }
}

/// The activations of one forward pass, sized for `token_capacity` tokens and
/// `sequence_capacity` sequences.
#[derive(Debug)]
pub struct Workspace {
    /// Tokens the activation buffers hold.
    pub token_capacity: usize,
    /// Sequences the pooling buffers hold.
    pub sequence_capacity: usize,
    /// Per token: id, position.
    pub token_table: wgpu::Buffer,
    /// Per sequence: first token, token count.
    pub spans: wgpu::Buffer,
    /// `tokens × hidden`: the running hidden state.
    pub hidden: wgpu::Buffer,
    /// `tokens × 3·hidden`: queries, keys and values.
    pub qkv: wgpu::Buffer,
    /// `tokens × hidden`: concatenated attention heads.
    pub context: wgpu::Buffer,
    /// `tokens × hidden`: the state after attention.
    pub attended: wgpu::Buffer,
    /// `tokens × intermediate`: the feed-forward activations.
    pub expanded: wgpu::Buffer,
    /// `sequences × hidden`: the pooled, normalised vectors.
    pub pooled: wgpu::Buffer,
    /// Host-readable copy of `pooled`.
    pub readback: wgpu::Buffer,
    /// One [`PARAMS_SLOT`] per dispatch.
    pub params: wgpu::Buffer,
}

impl Workspace {
    /// Allocates buffers for the given capacities and number of dispatches per pass.
    pub fn new(
        device: &wgpu::Device,
        config: &BertConfig,
        token_capacity: usize,
        sequence_capacity: usize,
        dispatches: usize,
    ) -> Self {
        let float = std::mem::size_of::<f32>();
        let activation = |name: &str, width: usize| {
            scratch(
                device,
                name,
                token_capacity * width * float,
                wgpu::BufferUsages::STORAGE,
            )
        };
        let hidden = config.hidden_size;
        let pooled_bytes = sequence_capacity * hidden * float;
        Self {
            token_capacity,
            sequence_capacity,
            token_table: scratch(
                device,
                "token_table",
                token_capacity * 2 * float,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            ),
            spans: scratch(
                device,
                "spans",
                sequence_capacity * 2 * float,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            ),
            hidden: activation("hidden", hidden),
            qkv: activation("qkv", 3 * hidden),
            context: activation("context", hidden),
            attended: activation("attended", hidden),
            expanded: activation("expanded", config.intermediate_size),
            pooled: scratch(
                device,
                "pooled",
                pooled_bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: scratch(
                device,
                "readback",
                pooled_bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            params: scratch(
                device,
                "params",
                dispatches * PARAMS_SLOT as usize,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
        }
    }

    /// Whether a pass of `tokens` tokens in `sequences` sequences fits.
    pub fn fits(&self, tokens: usize, sequences: usize) -> bool {
        tokens <= self.token_capacity && sequences <= self.sequence_capacity
    }
}

fn storage(device: &wgpu::Device, name: &str, bytes: &[u8]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(name),
        contents: bytes,
        usage: wgpu::BufferUsages::STORAGE,
    })
}

fn scratch(
    device: &wgpu::Device,
    name: &str,
    bytes: usize,
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(name),
        // Zero-sized buffers cannot be bound; four bytes is the smallest binding.
        size: bytes.max(4) as u64,
        usage,
        mapped_at_creation: false,
    })
}

/// Narrows a dimension or count for a shader. Every value passed here is bounded by
/// a buffer the device accepted (`GpuBackend::new` checks the largest against the
/// adapter's limits, which are themselves 32-bit), so nothing is lost.
pub fn to_u32(value: usize) -> u32 {
    debug_assert!(
        u32::try_from(value).is_ok(),
        "{value} does not fit a shader's u32"
    );
    value as u32
}
