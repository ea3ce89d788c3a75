//! Finding a wgpu adapter and opening a device on it. `auto` must never land on a
//! software rasteriser (Mesa's lavapipe is far slower than the CPU backend), while
//! `gpu` accepts one, which is how machines without a GPU exercise the kernels.

use std::sync::Arc;

use tessera_kernels::Precision;

use super::super::backend::BackendInfo;
use super::super::error::EngineError;
use super::kernels::WeightFormat;

/// Which adapters a backend request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// Only hardware GPUs (discrete, integrated, virtualised).
    HardwareOnly,
    /// Hardware GPUs first, else a software adapter such as lavapipe.
    AllowSoftware,
}

/// An opened device, its queue and what it is, for logs and `/ready`.
pub struct OpenedDevice {
    /// The logical device.
    pub device: wgpu::Device,
    /// Its submission queue.
    pub queue: wgpu::Queue,
    /// The limits the device was opened with (the adapter's own).
    pub limits: wgpu::Limits,
    /// How the weights are stored on it.
    pub weight_format: WeightFormat,
    /// Adapter name, API, device type and precision.
    pub info: BackendInfo,
}

/// Opens the best adapter `policy` allows: discrete before integrated before virtual,
/// software last and only when allowed. Half-width `precision` becomes f16 weights
/// where the adapter has `SHADER_F16` (WGSL has no bf16), else f32 with a log line.
pub fn open(policy: AdapterPolicy, precision: Precision) -> Result<OpenedDevice, EngineError> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let adapter = adapters
        .into_iter()
        .filter_map(|adapter| preference(&adapter.get_info(), policy).map(|rank| (rank, adapter)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, adapter)| adapter)
        .ok_or(match policy {
            AdapterPolicy::HardwareOnly => EngineError::NoGpuAdapter(
                "no hardware GPU adapter (Vulkan, Metal or DX12) was found",
            ),
            AdapterPolicy::AllowSoftware => EngineError::NoGpuAdapter(
                "no GPU adapter was found: install a Vulkan driver \
                 (mesa-vulkan-drivers gives a software one) or use INFERENCE_DEVICE=cpu",
            ),
        })?;
    let adapter_info = adapter.get_info();
    let limits = adapter.limits();
    let weight_format = WeightFormat::for_adapter(adapter.features(), precision);
    if precision == Precision::Bf16 && weight_format == WeightFormat::F32 {
        tracing::info!(
            requested = precision.name(),
            adapter = %adapter_info.name,
            "the adapter has no SHADER_F16: the GPU stores f32 weights"
        );
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("tessera-inference"),
        required_features: weight_format.required_features(),
        required_limits: limits.clone(),
        ..wgpu::DeviceDescriptor::default()
    }))
    .map_err(|error| EngineError::Gpu(format!("cannot open {}: {error}", adapter_info.name)))?;
    // wgpu's default handler panics; errors inside a call are caught by error scopes,
    // anything else is logged rather than taking the process down.
    device.on_uncaptured_error(Arc::new(|error| {
        tracing::error!(%error, "uncaptured GPU error");
    }));
    Ok(OpenedDevice {
        device,
        queue,
        limits,
        weight_format,
        info: BackendInfo {
            backend: "gpu",
            adapter: adapter_info.name.clone(),
            api: format!("{:?}", adapter_info.backend).to_lowercase(),
            device_type: device_type_name(adapter_info.device_type).to_owned(),
            precision: weight_format.name(),
        },
    })
}

/// Rank of an adapter under `policy` (lower is better), or `None` when not allowed.
fn preference(info: &wgpu::AdapterInfo, policy: AdapterPolicy) -> Option<u8> {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        wgpu::DeviceType::VirtualGpu => Some(2),
        wgpu::DeviceType::Other => Some(3),
        wgpu::DeviceType::Cpu => (policy == AdapterPolicy::AllowSoftware).then_some(4),
    }
}

fn device_type_name(device_type: wgpu::DeviceType) -> &'static str {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete_gpu",
        wgpu::DeviceType::IntegratedGpu => "integrated_gpu",
        wgpu::DeviceType::VirtualGpu => "virtual_gpu",
        wgpu::DeviceType::Other => "other",
        wgpu::DeviceType::Cpu => "cpu",
    }
}
