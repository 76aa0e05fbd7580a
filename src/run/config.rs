//! The run's config: everything that shapes a run, with the reference's
//! defaults (`docs/method.md`), as a run's TOML file and its checkpoints
//! hold it.

use std::path::{Path, PathBuf};

use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::RunError;
use crate::data::augment::AugmentConfig;
use crate::data::loader::LoaderConfig;
use crate::data::sampler::{Order, SamplerConfig};
use crate::error::IoError;
use crate::model::{Arch, BarlowTwins, Precision, ResNetConfig};
use crate::optim::{Lars, LarsConfig};

/// Everything that shapes a run; defaults are the reference's (`docs/method.md`). Loadable from TOML
/// (missing keys take these defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub arch: Arch,
    /// Base width of the ResNet (64 = torchvision's).
    pub width: usize,
    /// 3x3 stride-1 stem without max-pool (small images).
    pub small_stem: bool,
    pub image_size: u32,
    /// RandomResizedCrop area range (reference: 0.08 to 1).
    pub crop_scale: (f64, f64),
    pub batch_size: usize,
    pub epochs: u64,
    /// Stop after this many steps (the schedule still spans `epochs`).
    pub max_steps: Option<u64>,
    pub lambda: f32,
    pub lr_weights: f64,
    pub lr_biases: f64,
    pub weight_decay: f64,
    pub projector: Vec<usize>,
    pub seed: u64,
    /// The sampling order: `random` (the reference: a permutation of the
    /// whole set each epoch), or `blocked` (runs of `block` consecutive
    /// records, shuffled within windows of `window` blocks) for data read
    /// from an object store through a cache smaller than the set.
    pub order: Order,
    pub block: usize,
    pub window: usize,
    pub threads: usize,
    pub log_every: u64,
    /// The loss gradient is divided by this before LARS. 1 is the exact
    /// gradient of the batch's loss; the paper's code, which averaged the
    /// gradients of its 32 GPUs, moved with 1/32 of it (`docs/method.md`).
    pub grad_divisor: f64,
    /// The dtype of the convolutions and matmuls: f32, or bf16 for mixed
    /// precision (f32 weights, optimiser state, BatchNorm and loss; see
    /// [`crate::model::precision`]).
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: Arch::Resnet50,
            width: 64,
            small_stem: false,
            image_size: 224,
            crop_scale: (0.08, 1.0),
            batch_size: 2048,
            epochs: 1000,
            max_steps: None,
            lambda: 0.0051,
            lr_weights: 0.2,
            lr_biases: 0.0048,
            weight_decay: 1e-6,
            projector: vec![8192, 8192, 8192],
            seed: 0,
            order: Order::Random,
            block: SamplerConfig::default().block,
            window: SamplerConfig::default().window,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            log_every: 10,
            grad_divisor: 1.0,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// The demo's network and schedule: a narrow ResNet-18 (width 8, the
    /// ImageNet stem) at 32 px with a 256-256 projector, batch 64, small
    /// enough to train 20 epochs of the 1,280 sample images in a few minutes
    /// on two CPU cores. The augmentations and optimiser settings are the
    /// reference's.
    pub fn demo(threads: usize, epochs: u64) -> TrainConfig {
        TrainConfig {
            arch: Arch::Resnet18,
            width: 8,
            small_stem: false,
            image_size: 32,
            batch_size: 64,
            epochs,
            projector: vec![256, 256],
            threads,
            log_every: 5,
            ..TrainConfig::default()
        }
    }

    /// LARS with this config's weight decay and bias/weight rate ratio.
    pub fn optimizer<B: AutodiffBackend>(&self) -> OptimizerAdaptor<Lars, BarlowTwins<B>, B> {
        LarsConfig::new()
            .with_weight_decay(self.weight_decay)
            .with_biases_over_weights(self.lr_biases / self.lr_weights)
            .init::<B, BarlowTwins<B>>()
    }

    /// The config with the settings that do not change which batches and
    /// weights a run produces (threads, logging, where it stops) cleared:
    /// two runs with equal trajectories can continue each other.
    pub fn trajectory(&self) -> TrainConfig {
        TrainConfig {
            threads: 0,
            log_every: 0,
            max_steps: None,
            ..self.clone()
        }
    }

    /// The loader that feeds this run: the reference's augmentations at the run's
    /// size, crop scale, seed and batch.
    pub fn loader_config(&self) -> LoaderConfig {
        LoaderConfig {
            sampler: SamplerConfig {
                seed: self.seed,
                batch_size: self.batch_size,
                order: self.order,
                block: self.block,
                window: self.window,
                ..SamplerConfig::default()
            },
            augment: {
                let mut a = AugmentConfig {
                    size: self.image_size,
                    scale: self.crop_scale,
                    ..AugmentConfig::default()
                };
                // The reference's blur sigma is in pixels of a 224 px view: keep the
                // same blur relative to the view at other sizes.
                let k = self.image_size as f64 / 224.0;
                for v in &mut a.views {
                    v.blur_sigma = (v.blur_sigma.0 * k, v.blur_sigma.1 * k);
                }
                a
            },
            threads: self.threads,
            ..LoaderConfig::default()
        }
    }

    pub fn backbone(&self) -> ResNetConfig {
        ResNetConfig {
            arch: self.arch,
            width: self.width,
            small_stem: self.small_stem,
        }
    }

    /// Reads a TOML config file.
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig, RunError> {
        let text = std::fs::read_to_string(path).map_err(IoError::at(path))?;
        toml::from_str(&text).map_err(|e| RunError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// The top-level keys on which two configs differ.
pub fn differences(a: &TrainConfig, b: &TrainConfig) -> Result<String, RunError> {
    let (a, b) = (trajectory_json(a)?, trajectory_json(b)?);
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Ok(String::new());
    };
    Ok(a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: {v} there, {} here",
                b.get(k).cloned().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// `cfg`'s trajectory ([`TrainConfig::trajectory`]) as JSON.
pub fn trajectory_json(cfg: &TrainConfig) -> Result<serde_json::Value, RunError> {
    serde_json::to_value(cfg.trajectory()).map_err(|e| RunError::Format {
        path: PathBuf::from("config"),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_sigma_is_the_reference_at_224_and_scales_with_the_view() {
        let at = |size: u32| {
            let cfg = TrainConfig {
                image_size: size,
                ..TrainConfig::default()
            };
            cfg.loader_config().augment.views.map(|v| v.blur_sigma)
        };
        let spec = crate::data::augment::AugmentConfig::default()
            .views
            .map(|v| v.blur_sigma);
        assert_eq!(at(224), spec);
        for (scaled, s) in at(32).iter().zip(&spec) {
            assert!((scaled.0 - s.0 * 32.0 / 224.0).abs() < 1e-12);
            assert!((scaled.1 - s.1 * 32.0 / 224.0).abs() < 1e-12);
        }
    }

    #[test]
    fn configs_load_from_toml_with_defaults_for_missing_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("run.toml");
        std::fs::write(
            &p,
            "arch = \"resnet18\"\nwidth = 16\nprojector = [512, 512]\n",
        )
        .unwrap();
        let cfg = TrainConfig::from_toml_file(&p).unwrap();
        assert_eq!(cfg.arch, Arch::Resnet18);
        assert_eq!(cfg.width, 16);
        assert_eq!(cfg.projector, vec![512, 512]);
        assert_eq!(cfg.batch_size, TrainConfig::default().batch_size);
        std::fs::write(&p, "widht = 16\n").unwrap();
        let e = TrainConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("widht") && e.contains("run.toml"), "{e}");
    }
}
