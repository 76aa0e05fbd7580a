//! Finding a Vulkan adapter for burn's wgpu backend, before burn does.
//!
//! burn picks an adapter lazily and panics when there is none; this module
//! lists the adapters of the graphics API burn will use (Vulkan on Linux
//! and Windows), orders them as a user expects (discrete GPUs, then
//! integrated, then virtual) and maps `--device N` to burn's device handle.
//! A software adapter (Mesa's lavapipe, SwiftShader) is never chosen unless
//! asked for: it is for tests, not training.

use burn::backend::wgpu::WgpuDevice;
use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};

use super::{ALLOW_SOFTWARE_ENV, BackendError};

/// An adapter barlow may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// The driver's name for it, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// `discrete`, `integrated`, `virtual` or `software`.
    pub kind: &'static str,
    /// burn's handle for it.
    pub device: WgpuDevice,
}

impl Adapter {
    pub fn is_software(&self) -> bool {
        self.device == WgpuDevice::Cpu
    }
}

/// Every adapter barlow may use, in `--device` order: hardware GPUs
/// (discrete, integrated, virtual), then the software adapter when
/// `allow_software`.
pub fn adapters(allow_software: bool) -> Vec<Adapter> {
    let backend = AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let listed: Vec<(String, wgpu::DeviceType)> =
        pollster::block_on(instance.enumerate_adapters(backend.into()))
            .iter()
            .map(|a| {
                let info = a.get_info();
                (info.name, info.device_type)
            })
            .collect();
    order(&listed, allow_software)
}

/// The adapters of `listed` (name and type, in the driver's order) barlow
/// may use, in `--device` order, with burn's handle for each (burn counts
/// adapters per type, in the driver's order).
pub fn order(listed: &[(String, wgpu::DeviceType)], allow_software: bool) -> Vec<Adapter> {
    use wgpu::DeviceType as T;
    type Handle = fn(usize) -> WgpuDevice;
    let mut kinds: Vec<(T, &'static str, Handle)> = vec![
        (T::DiscreteGpu, "discrete", WgpuDevice::DiscreteGpu),
        (T::IntegratedGpu, "integrated", WgpuDevice::IntegratedGpu),
        (T::VirtualGpu, "virtual", WgpuDevice::VirtualGpu),
    ];
    if allow_software {
        kinds.push((T::Cpu, "software", |_| WgpuDevice::Cpu));
    }
    let mut out = Vec::new();
    for (ty, kind, handle) in kinds {
        let same = listed.iter().filter(|(_, t)| *t == ty);
        // burn opens the first software adapter only.
        let take = if ty == T::Cpu { 1 } else { usize::MAX };
        for (i, (name, _)) in same.take(take).enumerate() {
            out.push(Adapter {
                name: name.clone(),
                kind,
                device: handle(i),
            });
        }
    }
    out
}

/// The adapter `--device index` names, or one sentence saying why there is
/// none.
pub fn probe(index: usize, allow_software: bool) -> Result<Adapter, BackendError> {
    let usable = adapters(allow_software);
    if let Some(a) = usable.get(index) {
        return Ok(a.clone());
    }
    let none = |s: String| Err(BackendError::NoVulkan(s));
    if usable.is_empty() {
        let software = if allow_software {
            Vec::new()
        } else {
            adapters(true)
        };
        return match software.first() {
            Some(s) => none(format!(
                "only a software adapter ({}) is present; pass --allow-software (or set {ALLOW_SOFTWARE_ENV}=1) to run on it, slowly, for tests",
                s.name
            )),
            None => none(
                "no Vulkan driver or adapter was found (install the GPU's Vulkan driver and the Vulkan loader, libvulkan1)"
                    .into(),
            ),
        };
    }
    none(format!(
        "Vulkan device {index} asked for, {} usable: {}",
        usable.len(),
        usable
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {} ({})", a.name, a.kind))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
