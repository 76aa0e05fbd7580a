//! `barlow eval knn`, `barlow eval linear`, `barlow export` and `barlow
//! embed`: flags -> library calls -> printed results.

use std::io::Write;
use std::path::{Path, PathBuf};

use barlow::eval::knn::KnnConfig;
use barlow::eval::linear::{ProbeConfig, ProbeEpoch, ProbeLog, linear_probe};
use barlow::eval::{self, Backbone, EvalError, FeatureConfig, Source, load_backbone};
use barlow::model::BarlowTwins;
use barlow::model::torchvision;
use barlow::progress::Bar;
use barlow::run::checkpoint;
use burn::tensor::backend::AutodiffBackend;

use crate::train_cmd::{BackendArgs, open};

/// Which backbone is evaluated: exactly one of the two.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// A checkpoint folder, or a run folder (its latest checkpoint).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A safetensors file with torchvision's ResNet names (`barlow
    /// export`, or a torchvision checkpoint converted to safetensors); the
    /// architecture is read from its tensor names and shapes.
    #[arg(long)]
    weights: Option<PathBuf>,
}

impl SourceArgs {
    fn source(&self) -> Result<Source, String> {
        match (&self.checkpoint, &self.weights) {
            (Some(c), None) => Ok(Source::Checkpoint(c.clone())),
            (None, Some(w)) => Ok(Source::Weights(w.clone())),
            _ => Err("give one of --checkpoint and --weights".into()),
        }
    }
}

/// The backbone on the backend without autodiff (eval mode), and its view
/// size: `--image-size`, else the run's, else 224.
fn backbone<B: AutodiffBackend>(
    src: &SourceArgs,
    image_size: Option<u32>,
    device: &B::Device,
) -> Result<(Backbone<B::InnerBackend>, u32), String> {
    let b = load_backbone::<B::InnerBackend>(&src.source()?, device).map_err(|e| e.to_string())?;
    let size = image_size.or(b.image_size).unwrap_or(224);
    Ok((b, size))
}

/// `barlow eval knn`'s flags.
#[derive(clap::Args, Debug)]
pub struct KnnArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Memory bank dataset (made by shardify, labelled).
    #[arg(long)]
    train: PathBuf,
    /// Dataset classified.
    #[arg(long)]
    val: PathBuf,
    #[arg(long, default_value_t = 20)]
    k: usize,
    #[arg(long, default_value_t = 0.1)]
    temperature: f32,
    /// Eval crop side [default: the run's --image-size; 224 with --weights].
    #[arg(long)]
    image_size: Option<u32>,
    /// Loader threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    pub remote: crate::remote_args::RemoteArgs,
}

pub fn run_knn(a: KnnArgs) -> Result<(), String> {
    let choice = a.backend.choice()?;
    let (train, val) = (open(&a.train)?, open(&a.val)?);
    let knn = KnnConfig {
        k: a.k,
        temperature: a.temperature,
        ..KnnConfig::default()
    };
    let threads = crate::default_threads(a.threads);
    let (r, size, checkpoint) = barlow::with_backend!(choice, |B, device| {
        backbone::<B>(&a.source, a.image_size, &device).and_then(|(b, size)| {
            let features = FeatureConfig {
                image_size: size,
                batch_size: 256,
                threads,
                l2_normalise: true,
            };
            let checkpoint = b.checkpoint.map(|c| c.0);
            eval::knn_accuracy(&b.net, train, val, &knn, &features, &device, &Bar::new())
                .map(|r| (r, size, checkpoint))
                .map_err(|e| e.to_string())
        })
    })
    .map_err(|e| e.to_string())??;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"top1": r.top1, "top5": r.top5, "k": r.k, "evaluated": r.evaluated, "image_size": size, "checkpoint": checkpoint})
        );
    } else {
        println!(
            "kNN (k {}, T {}) on {} images at {size} px: top-1 {:.2}%, top-5 {:.2}%",
            r.k, a.temperature, r.evaluated, r.top1, r.top5
        );
    }
    Ok(())
}

/// `barlow eval linear`'s flags.
#[derive(clap::Args, Debug)]
pub struct LinearArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Training dataset of the classifier (made by shardify, labelled).
    #[arg(long)]
    train: PathBuf,
    /// Dataset the accuracy is measured on.
    #[arg(long)]
    val: PathBuf,
    #[arg(long, default_value_t = ProbeConfig::default().epochs)]
    epochs: u64,
    #[arg(long, default_value_t = ProbeConfig::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate (cosine-annealed to 0 over the epochs).
    #[arg(long, default_value_t = ProbeConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = ProbeConfig::default().momentum)]
    momentum: f64,
    #[arg(long, default_value_t = ProbeConfig::default().weight_decay)]
    weight_decay: f64,
    /// View side [default: the run's --image-size; 224 with --weights].
    #[arg(long)]
    image_size: Option<u32>,
    /// Smallest RandomResizedCrop area fraction of the training views.
    #[arg(long, default_value_t = ProbeConfig::default().crop_scale.0)]
    crop_scale_min: f64,
    /// Compute the training features once, through the eval transform (no
    /// RandomResizedCrop or flip): much faster, the way to probe on a CPU.
    #[arg(long)]
    cached_features: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Loader threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// JSONL file that gets one line per epoch [default: RUN/linear.jsonl
    /// for a checkpoint of a run folder, none with --weights].
    #[arg(long)]
    log: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    pub remote: crate::remote_args::RemoteArgs,
}

pub fn run_linear(a: LinearArgs) -> Result<(), String> {
    let choice = a.backend.choice()?;
    let (train, val) = (open(&a.train)?, open(&a.val)?);
    if !(a.crop_scale_min > 0.0 && a.crop_scale_min <= 1.0) {
        return Err(format!(
            "--crop-scale-min {} is not in (0, 1]",
            a.crop_scale_min
        ));
    }
    let threads = crate::default_threads(a.threads);
    let result = barlow::with_backend!(choice, |B, device| {
        backbone::<B>(&a.source, a.image_size, &device).and_then(|(b, size)| {
            let cfg = ProbeConfig {
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                momentum: a.momentum,
                weight_decay: a.weight_decay,
                image_size: size,
                crop_scale: (a.crop_scale_min, 1.0),
                cached_features: a.cached_features,
                seed: a.seed,
                threads,
            };
            let step = b.checkpoint.as_ref().map(|c| c.1);
            let log = a.log.clone().or_else(|| {
                let dir = &b.checkpoint.as_ref()?.0;
                Some(eval::run_of(dir)?.join("linear.jsonl"))
            });
            println!(
                "linear probe of {:?} width {} at {size} px: {} epochs, batch {}, lr {}{}",
                b.config.arch,
                b.config.width,
                cfg.epochs,
                cfg.batch_size,
                cfg.lr,
                if cfg.cached_features {
                    ", cached features"
                } else {
                    ""
                }
            );
            let mut file = match &log {
                Some(p) => Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .map_err(|e| format!("{}: {e}", p.display()))?,
                ),
                None => None,
            };
            let mut on_epoch = |e: &ProbeEpoch| -> Result<(), EvalError> {
                if let (Some(f), Some(p)) = (&mut file, &log) {
                    let line = ProbeLog {
                        step,
                        epoch: e.clone(),
                    }
                    .line()?;
                    // One write: concurrent appenders cannot interleave.
                    f.write_all(line.as_bytes())
                        .map_err(barlow::error::IoError::at(p))?;
                }
                Ok(())
            };
            linear_probe::<B>(
                &b.net,
                train,
                val,
                &cfg,
                &device,
                &Bar::new(),
                &mut on_epoch,
            )
            .map(|r| (r, log))
            .map_err(|e| e.to_string())
        })
    })
    .map_err(|e| e.to_string())?;
    let (r, log) = result?;
    let last = r.epochs.last().ok_or("--epochs 0: nothing was trained")?;
    let best = r
        .epochs
        .iter()
        .map(|e| e.top1)
        .fold(f64::NEG_INFINITY, f64::max);
    println!(
        "{} classes, {} training and {} validation images; after {} epochs: top-1 {:.2}%, top-5 {:.2}% (best top-1 {best:.2}%)",
        r.classes, r.train_images, r.val_images, last.epoch, last.top1, last.top5
    );
    if let Some(p) = &log {
        println!("per-epoch log: {}", p.display());
    }
    println!(
        "{}",
        serde_json::json!({"top1": last.top1, "top5": last.top5, "best_top1": best, "epochs": last.epoch, "train_loss": last.train_loss, "classes": r.classes})
    );
    Ok(())
}

/// `barlow export`'s flags.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint folder, or a run folder (its latest checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The safetensors file to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write the projector, as `projector.{0,1,3,4,6...}.*` (the
    /// reference's `nn.Sequential` names).
    #[arg(long)]
    with_projector: bool,
}

pub fn run_export(a: ExportArgs) -> Result<(), String> {
    let dir = checkpoint::resolve(&a.checkpoint).map_err(|e| e.to_string())?;
    let state = checkpoint::load_state(&dir).map_err(|e| e.to_string())?;
    let cfg = state.config;
    type B = burn::backend::Flex;
    let device = Default::default();
    let model = BarlowTwins::<B>::new(&cfg.backbone(), &cfg.projector, &device);
    let model = checkpoint::load_model(&dir, model, &device).map_err(|e| e.to_string())?;
    let projector = a.with_projector.then_some(&model.projector);
    let bytes = torchvision::export(&model.backbone, &cfg.backbone(), projector)
        .map_err(|e| e.to_string())?;
    barlow::fs::write_atomically(&a.out, &bytes).map_err(|e| e.to_string())?;
    println!(
        "wrote {} ({:.1} MiB): the backbone of {} (step {}) under torchvision's names{}",
        a.out.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        dir.display(),
        state.step,
        if a.with_projector {
            ", with the projector"
        } else {
            ""
        }
    );
    let name = barlow::Choice::name(cfg.arch);
    let mut notes = Vec::new();
    if cfg.width != 64 {
        notes.push(format!(
            "width {} (torchvision's constructors build width 64)",
            cfg.width
        ));
    }
    if cfg.small_stem {
        notes.push(
            "the small stem: set m.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False) and m.maxpool = nn.Identity()"
                .into(),
        );
    }
    if a.with_projector {
        notes.push(
            "drop the projector.* keys first: {k: v for k, v in sd.items() if not k.startswith(\"projector.\")}"
                .into(),
        );
    }
    if notes.is_empty() {
        println!(
            "load it: m = torchvision.models.{name}(); m.fc = torch.nn.Identity(); m.load_state_dict(safetensors.torch.load_file({:?}))",
            a.out.display().to_string()
        );
    } else {
        println!(
            "to load it into torchvision.models.{name}(): {}",
            notes.join("; ")
        );
    }
    Ok(())
}

/// `barlow embed`'s flags.
#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Dataset (made by shardify) whose every record is embedded.
    #[arg(long, conflicts_with = "image", requires = "out")]
    data: Option<PathBuf>,
    /// Output of --data: FILE.npy (and FILE.labels.npy) or FILE.safetensors.
    #[arg(long)]
    out: Option<PathBuf>,
    /// One image file: its feature vector is printed as a JSON array.
    #[arg(long, required_unless_present = "data")]
    image: Option<PathBuf>,
    /// View side [default: the run's --image-size; 224 with --weights].
    #[arg(long)]
    image_size: Option<u32>,
    /// Loader threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    pub remote: crate::remote_args::RemoteArgs,
}

pub fn run_embed(a: EmbedArgs) -> Result<(), String> {
    let choice = a.backend.choice()?;
    if let Some(out) = &a.out
        && eval::embed::Format::of(out).is_none()
    {
        return Err(format!(
            "{}: name the output .npy or .safetensors",
            out.display()
        ));
    }
    let threads = crate::default_threads(a.threads);
    barlow::with_backend!(choice, |B, device| {
        backbone::<B>(&a.source, a.image_size, &device).and_then(|(b, size)| {
            match (&a.image, &a.data, &a.out) {
                (Some(image), _, _) => {
                    let v = eval::embed::embed_image(&b.net, image, size, &device)
                        .map_err(|e| e.to_string())?;
                    println!(
                        "{}: {} features ({size} px eval view)",
                        image.display(),
                        v.len()
                    );
                    println!("{}", serde_json::json!(v));
                    Ok(())
                }
                (None, Some(data), Some(out)) => {
                    embed_dataset(&b, data, out, size, threads, &device)
                }
                _ => Err("give --image, or --data with --out".into()),
            }
        })
    })
    .map_err(|e| e.to_string())?
}

fn embed_dataset<B: burn::tensor::backend::Backend>(
    b: &Backbone<B>,
    data: &Path,
    out: &Path,
    size: u32,
    threads: usize,
    device: &B::Device,
) -> Result<(), String> {
    let cfg = FeatureConfig {
        image_size: size,
        batch_size: 256,
        threads,
        l2_normalise: false,
    };
    let f = eval::features(&b.net, open(data)?, &cfg, device, &Bar::new())
        .map_err(|e| e.to_string())?;
    let written = eval::embed::save(out, &f).map_err(|e| e.to_string())?;
    println!(
        "wrote {} features of {} records ({size} px eval view) to {}",
        f.dim,
        f.len(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    Ok(())
}

/// `barlow report`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The run folder (`barlow train --out`).
    pub run: PathBuf,
    /// Folder to write [default: RUN/report].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_report(a: ReportArgs) -> Result<(), String> {
    let out = a.out.unwrap_or_else(|| a.run.join("report"));
    let files = barlow::report::write(&a.run, &out).map_err(|e| e.to_string())?;
    println!("wrote {}", out.join("index.html").display());
    for f in files.iter().filter(|f| !f.ends_with("index.html")) {
        println!("  {}", f.display());
    }
    Ok(())
}
