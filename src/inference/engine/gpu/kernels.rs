//! The WGSL compute kernels, compiled once per device, and the parameter block
//! every dispatch receives.

use std::borrow::Cow;

use tessera_kernels::Precision;

use super::super::error::EngineError;

/// Each dispatch's [`Params`] lives in its own slot of one uniform buffer; 256 bytes
/// is the largest uniform-offset alignment wgpu allows, so it is valid everywhere.
pub const PARAMS_SLOT: u64 = 256;

/// Size of [`Params`] as WGSL lays it out.
pub const PARAMS_SIZE: u64 = 24;

/// Tile edge of the matrix-multiply kernel (`linear.wgsl`).
pub const LINEAR_TILE: u32 = 64;

/// Widest head `attention.wgsl` takes: each invocation holds one query and its
/// weighted sum of values, twice the head size in floats, in registers.
pub const ATTENTION_MAX_HEAD_SIZE: usize = 256;
/// Queries per attention workgroup (`QUERY_BLOCK` in `attention.wgsl`, which
/// receives it from [`shader_header`]).
pub const ATTENTION_QUERY_BLOCK: u32 = 32;
/// Keys one attention workgroup stages at a time, at most: more would leave each
/// invocation's scores too many registers.
const ATTENTION_MAX_KEY_CHUNK: usize = 32;
/// Floats of keys (and as many of values) one attention chunk may stage: 8 KiB of
/// workgroup memory in all, half of what every WebGPU device offers.
const ATTENTION_CHUNK_VALUES: usize = 1024;

/// `linear.wgsl` flag: apply GELU.
pub const FLAG_GELU: u32 = 1;
/// `linear.wgsl` flag: add the residual operand.
pub const FLAG_RESIDUAL: u32 = 2;
/// `pool.wgsl` flag: take the first token instead of the mean.
pub const POOL_CLS: u32 = 1;

const COMMON: &str = include_str!("kernels/common.wgsl");

/// How weight matrices and embedding tables are stored on the device. Biases and
/// layer norms stay f32 (they are small), and every kernel accumulates in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Four bytes per weight.
    F32,
    /// Two bytes per weight, read through WGSL's `f16` (`SHADER_F16`).
    F16,
}

impl WeightFormat {
    /// The name `/ready` and the models listing report.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// f16 where `precision` asks for half-width weights and the adapter's
    /// `features` can read them (WGSL has no bf16), else f32.
    pub fn for_adapter(features: wgpu::Features, precision: Precision) -> Self {
        match precision {
            Precision::Bf16 if features.contains(wgpu::Features::SHADER_F16) => Self::F16,
            Precision::F32 | Precision::Bf16 => Self::F32,
        }
    }

    /// The device features reading this format needs.
    pub fn required_features(self) -> wgpu::Features {
        match self {
            Self::F32 => wgpu::Features::empty(),
            Self::F16 => wgpu::Features::SHADER_F16,
        }
    }

    /// Opens every shader: the kernels read weights as `weight_scalar` and widen
    /// them with `f32(…)`, so one source serves both formats.
    fn scalar_alias(self) -> &'static str {
        match self {
            Self::F32 => "alias weight_scalar = f32;\n",
            Self::F16 => "enable f16;\nalias weight_scalar = f16;\n",
        }
    }

    /// `values` in this format, as the bytes of a storage buffer (f32 borrows
    /// them). A finite value beyond f16's range (±65504) is an error rather than
    /// an infinity that would turn every vector into NaN.
    pub fn encode<'values>(
        self,
        name: &str,
        values: &'values [f32],
    ) -> Result<Cow<'values, [u8]>, EngineError> {
        match self {
            Self::F32 => Ok(Cow::Borrowed(bytemuck::cast_slice(values))),
            Self::F16 => {
                let mut bytes = Vec::with_capacity(values.len() * 2);
                for &value in values {
                    let half = half::f16::from_f32(value);
                    if value.is_finite() && half.is_infinite() {
                        return Err(EngineError::Gpu(format!(
                            "{name} holds {value}, beyond f16's range: \
                             use INFERENCE_PRECISION=f32 on this GPU"
                        )));
                    }
                    bytes.extend_from_slice(&half.to_bits().to_ne_bytes());
                }
                Ok(Cow::Owned(bytes))
            }
        }
    }
}

/// Mirrors `Params` in `common.wgsl`; fields a kernel does not read stay zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct Params {
    /// Output rows (tokens, or sequences when pooling).
    pub rows: u32,
    /// Output columns.
    pub cols: u32,
    /// Shared dimension of a matrix multiply.
    pub inner: u32,
    /// Kernel-specific switches.
    pub flags: u32,
    /// Layer-norm epsilon.
    pub epsilon: f32,
    /// Attention score scale.
    pub scale: f32,
}

impl Params {
    /// The bytes of the WGSL struct (six 4-byte words in native byte order).
    pub fn bytes(&self) -> [u8; PARAMS_SIZE as usize] {
        let words = [
            self.rows,
            self.cols,
            self.inner,
            self.flags,
            self.epsilon.to_bits(),
            self.scale.to_bits(),
        ];
        let mut bytes = [0u8; PARAMS_SIZE as usize];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        bytes
    }
}

/// One compute pipeline and the layout its bind groups are made for.
#[derive(Debug)]
pub struct Kernel {
    /// The compiled pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Its bind group 0 layout, derived from the shader.
    pub layout: wgpu::BindGroupLayout,
}

/// Every kernel of the forward pass.
#[derive(Debug)]
pub struct Kernels {
    /// Embedding lookup and sum.
    pub embed: Kernel,
    /// In-place layer norm.
    pub layer_norm: Kernel,
    /// Matrix multiply with bias, GELU and residual epilogue.
    pub linear: Kernel,
    /// Masked multi-head self-attention.
    pub attention: Kernel,
    /// Pooling and L2 normalisation.
    pub pool: Kernel,
}

impl Kernels {
    /// Compiles every kernel for weights stored as `format` and heads `head_size`
    /// wide (at most [`ATTENTION_MAX_HEAD_SIZE`]); a shader the driver rejects
    /// becomes an error, not a panic.
    pub fn compile(
        device: &wgpu::Device,
        format: WeightFormat,
        head_size: usize,
    ) -> Result<Self, EngineError> {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let header = shader_header(format, head_size);
        let compile = |name: &str, source: &str| compile(device, &header, name, source);
        let kernels = Self {
            embed: compile("embed", include_str!("kernels/embed.wgsl")),
            layer_norm: compile("layer_norm", include_str!("kernels/layer_norm.wgsl")),
            linear: compile("linear", include_str!("kernels/linear.wgsl")),
            attention: compile("attention", include_str!("kernels/attention.wgsl")),
            pool: compile("pool", include_str!("kernels/pool.wgsl")),
        };
        match pollster::block_on(scope.pop()) {
            Some(error) => Err(EngineError::Gpu(format!(
                "compiling the compute kernels: {error}"
            ))),
            None => Ok(kernels),
        }
    }
}

/// What every shader is prefixed with: the weights' scalar type, and the attention
/// kernel's shape (the model's head width, the key chunk that width allows, the
/// query block) as constants, so its loops have trip counts the driver's compiler
/// can unroll into registers.
fn shader_header(format: WeightFormat, head_size: usize) -> String {
    let key_chunk = (ATTENTION_CHUNK_VALUES / head_size.max(1)).min(ATTENTION_MAX_KEY_CHUNK);
    format!(
        "{}const HEAD_SIZE: u32 = {head_size}u;\nconst KEY_CHUNK: u32 = {key_chunk}u;\n\
         const QUERY_BLOCK: u32 = {ATTENTION_QUERY_BLOCK}u;\n",
        format.scalar_alias()
    )
}

fn compile(device: &wgpu::Device, header: &str, name: &str, source: &str) -> Kernel {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(format!("{header}{COMMON}\n{source}").into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    let layout = pipeline.get_bind_group_layout(0);
    Kernel { pipeline, layout }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_width_weights_need_shader_f16_and_f32_never_asks_for_it() {
        let f16 = wgpu::Features::SHADER_F16;
        let none = wgpu::Features::empty();
        assert_eq!(
            WeightFormat::for_adapter(f16, Precision::Bf16),
            WeightFormat::F16
        );
        assert_eq!(
            WeightFormat::for_adapter(none, Precision::Bf16),
            WeightFormat::F32
        );
        assert_eq!(
            WeightFormat::for_adapter(f16, Precision::F32),
            WeightFormat::F32
        );
        assert_eq!(WeightFormat::F16.required_features(), f16);
        assert_eq!(WeightFormat::F32.required_features(), none);
    }

    #[test]
    fn f16_encoding_rounds_to_nearest_and_refuses_values_beyond_its_range() {
        let values = [1.0, -2.5, 0.1, 65504.0, f32::INFINITY];
        let bytes = WeightFormat::F16.encode("table", &values).unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|pair| half::f16::from_bits(u16::from_ne_bytes([pair[0], pair[1]])).to_f32())
            .collect();
        assert_eq!(decoded[..2], [1.0, -2.5]);
        assert!((decoded[2] - 0.1).abs() < 1e-4, "{}", decoded[2]);
        assert_eq!(decoded[3], 65504.0);
        assert!(decoded[4].is_infinite());
        let error = WeightFormat::F16
            .encode("qkv", &[1.0, 70000.0])
            .unwrap_err();
        assert!(error.to_string().contains("qkv holds 70000"), "{error}");
        let f32_bytes = WeightFormat::F32.encode("qkv", &[70000.0]).unwrap();
        assert_eq!(f32_bytes.as_ref(), 70000.0f32.to_ne_bytes());
    }
}
