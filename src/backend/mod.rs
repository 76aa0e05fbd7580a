//! Which burn backend runs the network: Flex on the CPU everywhere, CUDA on
//! NVIDIA GPUs with the `cuda` feature, Vulkan (AMD, Intel and NVIDIA GPUs,
//! and a software device for tests) with the `vulkan` feature.
//!
//! Guarantees: asking for a GPU never panics. [`BackendChoice::check`]
//! probes for it (for CUDA the driver, loaded at run time, the device count
//! and the toolkit that burn's kernel compiler needs; for Vulkan the
//! adapters, see [`vulkan`]) and answers with one sentence saying what is
//! missing. [`with_backend!`] runs a generic body on the chosen backend
//! type; call `check` first. [`check`] holds the checks that prove a device
//! backend computes what the CPU computes.

pub mod check;
#[cfg(all(debug_assertions, any(feature = "vulkan", feature = "cuda")))]
pub mod instances;
#[cfg(feature = "vulkan")]
pub mod vulkan;

use serde::{Deserialize, Serialize};

/// The CPU training backend (Flex under autodiff).
pub type Cpu = burn::backend::Autodiff<burn::backend::Flex>;
/// The CUDA training backend. Its weights are f32; mixed precision casts
/// per layer ([`crate::model::precision`]).
#[cfg(feature = "cuda")]
pub type CudaF32 = burn::backend::Autodiff<burn::backend::Cuda<f32>>;
#[cfg(feature = "cuda")]
pub use burn::backend::cuda::CudaDevice;
/// The Vulkan training backend (f32).
#[cfg(feature = "vulkan")]
pub type VulkanF32 = burn::backend::Autodiff<burn::backend::Vulkan<f32>>;

/// The environment variable that lets commands use a software Vulkan
/// adapter without `--allow-software` (CI sets it).
pub const ALLOW_SOFTWARE_ENV: &str = "BARLOW_ALLOW_SOFTWARE_DEVICE";

/// Whether a software adapter may be used: `flag` (`--allow-software`), or
/// [`ALLOW_SOFTWARE_ENV`] set (and not `0`).
pub fn software_allowed(flag: bool) -> bool {
    flag || std::env::var_os(ALLOW_SOFTWARE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Flex, burn's pure-Rust CPU backend.
    #[default]
    Cpu,
    /// burn's CUDA backend (needs the `cuda` feature, a driver and a toolkit).
    Cuda,
    /// burn's wgpu backend on Vulkan with SPIR-V shaders (needs the `vulkan`
    /// feature and a Vulkan driver).
    Vulkan,
}

impl crate::Choice for BackendKind {
    const NAMES: &'static [(Self, &'static str)] = &[
        (BackendKind::Cpu, "cpu"),
        (BackendKind::Cuda, "cuda"),
        (BackendKind::Vulkan, "vulkan"),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackendChoice {
    pub kind: BackendKind,
    /// Device index: CUDA's numbering, or the Vulkan adapters' order
    /// ([`vulkan::adapters`]).
    pub device: usize,
    /// Whether a software Vulkan adapter may be used (for tests).
    #[serde(default)]
    pub allow_software: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("this barlow was built without {0} support: rebuild it with `--features {0}`")]
    NotCompiled(&'static str),
    #[error("no usable NVIDIA GPU: {0}")]
    NoCuda(String),
    #[error("no usable Vulkan device: {0}")]
    NoVulkan(String),
    #[error("{0}")]
    Peers(String),
}

/// The devices of `peers` data-parallel peers. On the CPU every peer
/// shares `first` (the CPU device); on a GPU backend peer k runs on device
/// `ids[k]` (CUDA's numbering; for Vulkan, adapters of `first`'s type),
/// `ids` defaulting to `first`'s index plus `offset`, plus 0, 1, ...,
/// `peers - 1` (`offset`: this process's first device on a machine shared
/// with other processes of an MPI job).
pub fn peer_devices<D: burn::tensor::backend::DeviceOps>(
    kind: BackendKind,
    first: &D,
    peers: usize,
    ids: Option<&[usize]>,
    offset: usize,
) -> Result<Vec<D>, BackendError> {
    let peers = peers.max(1);
    if kind == BackendKind::Cpu {
        if ids.is_some() {
            return Err(BackendError::Peers(
                "--device-ids is for GPU backends: on the CPU every peer shares the CPU".into(),
            ));
        }
        return Ok(vec![first.clone(); peers]);
    }
    if ids.is_none() && peers == 1 && offset == 0 {
        return Ok(vec![first.clone()]);
    }
    let base = usize::from(first.to_id().index_id) + offset;
    let default: Vec<usize> = (base..base + peers).collect();
    let ids = ids.unwrap_or(&default);
    if ids.len() != peers {
        return Err(BackendError::Peers(format!(
            "--device-ids names {} devices for {peers} peers",
            ids.len()
        )));
    }
    ids.iter()
        .map(|&i| {
            let mut id = first.to_id();
            id.index_id = u16::try_from(i)
                .map_err(|_| BackendError::Peers(format!("device index {i} is out of range")))?;
            Ok(D::from_id(id))
        })
        .collect()
}

impl BackendChoice {
    pub fn cpu() -> BackendChoice {
        BackendChoice::default()
    }

    /// The first usable of: CUDA device 0, Vulkan hardware device 0 (never
    /// a software one), the CPU; in f32.
    pub fn auto() -> BackendChoice {
        [BackendKind::Cuda, BackendKind::Vulkan]
            .into_iter()
            .map(|kind| BackendChoice {
                kind,
                ..BackendChoice::default()
            })
            .find(|c| c.check().is_ok())
            .unwrap_or_default()
    }

    /// Whether this choice can run here, without creating a device.
    pub fn check(&self) -> Result<(), BackendError> {
        match self.kind {
            BackendKind::Cpu => Ok(()),
            BackendKind::Cuda => probe_cuda(self.device),
            BackendKind::Vulkan => self.vulkan_adapter().map(drop),
        }
    }

    /// The Vulkan adapter this choice runs on.
    #[cfg(feature = "vulkan")]
    pub fn vulkan_adapter(&self) -> Result<vulkan::Adapter, BackendError> {
        vulkan::probe(self.device, self.allow_software)
    }

    #[cfg(not(feature = "vulkan"))]
    fn vulkan_adapter(&self) -> Result<(), BackendError> {
        Err(BackendError::NotCompiled("vulkan"))
    }

    /// A name for logs and summaries, e.g. `cuda:0`.
    pub fn describe(&self) -> String {
        match self.kind {
            BackendKind::Cpu => "cpu (flex)".to_string(),
            BackendKind::Cuda => format!("cuda:{}", self.device),
            BackendKind::Vulkan => format!("vulkan:{}{}", self.device, self.adapter_label()),
        }
    }

    /// ` (name, kind)` of the Vulkan adapter, or why there is none.
    #[cfg(feature = "vulkan")]
    fn adapter_label(&self) -> String {
        match self.vulkan_adapter() {
            Ok(a) => format!(" ({}, {})", a.name, a.kind),
            Err(e) => format!(" ({e})"),
        }
    }

    #[cfg(not(feature = "vulkan"))]
    fn adapter_label(&self) -> String {
        String::new()
    }
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda(_device: usize) -> Result<(), BackendError> {
    Err(BackendError::NotCompiled("cuda"))
}

#[cfg(feature = "cuda")]
fn probe_cuda(device: usize) -> Result<(), BackendError> {
    let no = |s: String| Err(BackendError::NoCuda(s));
    // SAFETY: only tries to dlopen the driver library (libcuda) and drops it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return no("the NVIDIA driver library (libcuda) could not be loaded".into());
    }
    let count = match cudarc::driver::CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => return no(format!("the NVIDIA driver did not initialise ({e})")),
    };
    if device >= count {
        return no(format!(
            "CUDA device {device} asked for, {count} device(s) present"
        ));
    }
    if cubecl_cuda::install::cuda_path().is_none() {
        return no(
            "the CUDA toolkit that compiles burn's kernels was not found (set CUDA_PATH, or install it in /usr/local/cuda)"
                .into(),
        );
    }
    Ok(())
}

/// Runs `$body` with `$B` bound to the training backend type of `$choice`
/// and `$dev` to its device; evaluates to `Result<body's type, BackendError>`.
///
/// ```ignore
/// let loss = barlow::with_backend!(choice, |B, device| run::<B>(&device))?;
/// ```
#[macro_export]
macro_rules! with_backend {
    ($choice:expr, |$B:ident, $dev:ident| $body:expr) => {{
        use $crate::backend::{BackendError, BackendKind};
        let choice: $crate::backend::BackendChoice = $choice;
        match choice.kind {
            BackendKind::Cpu => {
                type $B = $crate::backend::Cpu;
                let $dev = Default::default();
                Ok::<_, BackendError>($body)
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                type $B = $crate::backend::CudaF32;
                let $dev = $crate::backend::CudaDevice::new(choice.device);
                Ok($body)
            }
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => Err(BackendError::NotCompiled("cuda")),
            #[cfg(feature = "vulkan")]
            BackendKind::Vulkan => match choice.vulkan_adapter() {
                Ok(adapter) => {
                    type $B = $crate::backend::VulkanF32;
                    let $dev = adapter.device;
                    Ok($body)
                }
                Err(e) => Err(e),
            },
            #[cfg(not(feature = "vulkan"))]
            BackendKind::Vulkan => Err(BackendError::NotCompiled("vulkan")),
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_choices_are_refused_with_a_sentence() {
        assert!(BackendChoice::cpu().check().is_ok());
        // This machine has no NVIDIA driver: CUDA is refused, never a panic.
        let cuda = BackendChoice {
            kind: BackendKind::Cuda,
            ..BackendChoice::cpu()
        };
        if std::path::Path::new("/proc/driver/nvidia").exists() {
            return;
        }
        assert!(cuda.check().is_err());
        assert_ne!(BackendChoice::auto().kind, BackendKind::Cuda);
    }

    /// The keys and values CubeCL 0.10 accepts in `burn.toml`
    /// (cubecl-runtime's `config::{autotune, compilation, streaming,
    /// cache}`); CubeCL panics on a file it cannot parse.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct BurnToml {
        cubecl: CubeCl,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CubeCl {
        autotune: Autotune,
        compilation: Compilation,
        streaming: Streaming,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Autotune {
        level: Level,
        cache: Cache,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Compilation {
        cache: Cache,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Streaming {
        max_streams: u8,
    }
    #[derive(serde::Deserialize, PartialEq, Debug)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Level {
        Minimal,
        Balanced,
        Extensive,
        Full,
    }
    #[derive(serde::Deserialize, PartialEq, Debug)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Cache {
        Local,
        Target,
        Global,
    }

    #[test]
    fn the_shipped_burn_toml_is_what_cubecl_reads() {
        let text = include_str!("../../burn.toml");
        let t: BurnToml = toml::from_str(text).unwrap();
        assert_eq!(t.cubecl.streaming.max_streams, 1);
        assert_eq!(t.cubecl.autotune.level, Level::Balanced);
        assert_eq!(t.cubecl.autotune.cache, Cache::Target);
        assert_eq!(t.cubecl.compilation.cache, Cache::Target);
    }

    #[test]
    fn the_macro_runs_the_body_on_the_chosen_backend() {
        use burn::tensor::{ElementConversion, Tensor};
        let r = crate::with_backend!(BackendChoice::cpu(), |B, device| {
            Tensor::<B, 1>::from_floats([1.0, 2.0], &device)
                .sum()
                .into_scalar()
                .elem::<f32>()
        });
        assert_eq!(r, Ok(3.0));
        let r = crate::with_backend!(
            // Not compiled in, or no adapter 99.
            BackendChoice {
                kind: BackendKind::Vulkan,
                device: 99,
                ..BackendChoice::cpu()
            },
            |B, device| Tensor::<B, 1>::zeros([1], &device)
                .sum()
                .into_scalar()
                .elem::<f32>()
        );
        assert!(r.is_err());
    }
}
