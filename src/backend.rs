//! Which burn backend runs the network: Flex on the CPU everywhere, CUDA on
//! NVIDIA GPUs when the crate is built with the `cuda` feature.
//!
//! Guarantees: asking for CUDA never panics. [`BackendChoice::check`] probes
//! the driver (loaded at run time), the device count and the CUDA toolkit
//! that burn's kernel compiler needs, and answers with one sentence saying
//! what is missing. [`with_backend!`] runs a generic body on the chosen
//! backend type; call `check` first.

use serde::{Deserialize, Serialize};

/// The CPU training backend (Flex under autodiff).
pub type Cpu = burn::backend::Autodiff<burn::backend::Flex>;
/// CUDA training backends, one per precision.
#[cfg(feature = "cuda")]
pub type CudaF32 = burn::backend::Autodiff<burn::backend::Cuda<f32>>;
#[cfg(feature = "cuda")]
pub type CudaBf16 = burn::backend::Autodiff<burn::backend::Cuda<burn::tensor::bf16>>;
#[cfg(feature = "cuda")]
pub type CudaF16 = burn::backend::Autodiff<burn::backend::Cuda<burn::tensor::f16>>;
#[cfg(feature = "cuda")]
pub use burn::backend::cuda::CudaDevice;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Flex, burn's pure-Rust CPU backend.
    #[default]
    Cpu,
    /// burn's CUDA backend (needs the `cuda` feature, a driver and a toolkit).
    Cuda,
}

impl crate::Choice for BackendKind {
    const NAMES: &'static [(Self, &'static str)] =
        &[(BackendKind::Cpu, "cpu"), (BackendKind::Cuda, "cuda")];
}

/// Floating-point type of the network on the device. The Barlow Twins
/// cross-correlation and loss are computed in f32 whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl crate::Choice for Precision {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Precision::F32, "f32"),
        (Precision::Bf16, "bf16"),
        (Precision::F16, "f16"),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackendChoice {
    pub kind: BackendKind,
    pub precision: Precision,
    /// CUDA device index.
    pub device: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("this barlow was built without CUDA support: rebuild it with `--features cuda`")]
    NotCompiled,
    #[error("--precision {0:?} needs --backend cuda (the CPU backend computes in f32)")]
    PrecisionNeedsCuda(Precision),
    #[error("no usable NVIDIA GPU: {0}")]
    NoCuda(String),
}

impl BackendChoice {
    pub fn cpu() -> BackendChoice {
        BackendChoice::default()
    }

    /// CUDA device 0 in f32 when a usable GPU is there, else the CPU.
    pub fn auto() -> BackendChoice {
        let cuda = BackendChoice {
            kind: BackendKind::Cuda,
            ..BackendChoice::default()
        };
        if cuda.check().is_ok() {
            cuda
        } else {
            BackendChoice::cpu()
        }
    }

    /// Whether this choice can run here, without creating a device.
    pub fn check(&self) -> Result<(), BackendError> {
        match self.kind {
            BackendKind::Cpu if self.precision != Precision::F32 => {
                Err(BackendError::PrecisionNeedsCuda(self.precision))
            }
            BackendKind::Cpu => Ok(()),
            BackendKind::Cuda => probe_cuda(self.device),
        }
    }

    /// A name for logs and summaries, e.g. `cuda:0 bf16`.
    pub fn describe(&self) -> String {
        let p = match self.precision {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        };
        match self.kind {
            BackendKind::Cpu => format!("cpu (flex) {p}"),
            BackendKind::Cuda => format!("cuda:{} {p}", self.device),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda(_device: usize) -> Result<(), BackendError> {
    Err(BackendError::NotCompiled)
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
        use $crate::backend::{BackendError, BackendKind, Precision};
        let choice: $crate::backend::BackendChoice = $choice;
        match (choice.kind, choice.precision) {
            (BackendKind::Cpu, Precision::F32) => {
                type $B = $crate::backend::Cpu;
                let $dev = Default::default();
                Ok($body)
            }
            (BackendKind::Cpu, p) => Err(BackendError::PrecisionNeedsCuda(p)),
            #[cfg(feature = "cuda")]
            (BackendKind::Cuda, Precision::F32) => {
                type $B = $crate::backend::CudaF32;
                let $dev = $crate::backend::CudaDevice::new(choice.device);
                Ok($body)
            }
            #[cfg(feature = "cuda")]
            (BackendKind::Cuda, Precision::Bf16) => {
                type $B = $crate::backend::CudaBf16;
                let $dev = $crate::backend::CudaDevice::new(choice.device);
                Ok($body)
            }
            #[cfg(feature = "cuda")]
            (BackendKind::Cuda, Precision::F16) => {
                type $B = $crate::backend::CudaF16;
                let $dev = $crate::backend::CudaDevice::new(choice.device);
                Ok($body)
            }
            #[cfg(not(feature = "cuda"))]
            (BackendKind::Cuda, _) => Err(BackendError::NotCompiled),
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_choices_are_refused_with_a_sentence() {
        let bf16_cpu = BackendChoice {
            precision: Precision::Bf16,
            ..BackendChoice::cpu()
        };
        assert_eq!(
            bf16_cpu.check(),
            Err(BackendError::PrecisionNeedsCuda(Precision::Bf16))
        );
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
        assert_eq!(BackendChoice::auto(), BackendChoice::cpu());
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
        let text = include_str!("../burn.toml");
        let t: BurnToml = toml::from_str(text).unwrap();
        assert_eq!(t.cubecl.streaming.max_streams, 1);
        assert_eq!(t.cubecl.autotune.level, Level::Balanced);
        assert_eq!(t.cubecl.autotune.cache, Cache::Target);
        assert_eq!(t.cubecl.compilation.cache, Cache::Target);
    }

    #[test]
    fn the_macro_runs_the_body_on_the_chosen_backend() {
        use burn::tensor::{ElementConversion, Tensor};
        // `elem::<f32>()`: with the `cuda` feature the arms' float types differ.
        let r = crate::with_backend!(BackendChoice::cpu(), |B, device| {
            Tensor::<B, 1>::from_floats([1.0, 2.0], &device)
                .sum()
                .into_scalar()
                .elem::<f32>()
        });
        assert_eq!(r, Ok(3.0));
        let r = crate::with_backend!(
            BackendChoice {
                precision: Precision::F16,
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
