//! `barlow demo`: the embedded end-to-end job on generated sample data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use barlow::backend::{BackendChoice, BackendKind};
use barlow::data::loader::Loader;
use barlow::data::sampler::Position;
use barlow::data::shard::Dataset;
use barlow::eval::knn::KnnConfig;
use barlow::eval::linear::{ProbeConfig, ProbeEpoch, ProbeLog, linear_probe};
use barlow::model::ResNet;
use barlow::prep::datasets::sample::{self, SampleOptions};
use barlow::prep::shardify;
use barlow::progress::Bar;
use barlow::train::{self, Monitor, RunOptions, TrainConfig, TrainSummary};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::choice;
use crate::train_cmd::open;

/// Images/s of the loader alone over two epochs of the demo's batches.
fn loader_rate(
    ds: std::sync::Arc<barlow::data::shard::Dataset>,
    cfg: &TrainConfig,
) -> Result<f64, String> {
    let mut loader =
        Loader::new(ds, cfg.loader_config(), Position::default()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut images = 0;
    for _ in 0..2 * loader.sampler().batches_per_epoch() {
        images += loader.next_batch().map_err(|e| e.to_string())?.len();
    }
    Ok(images as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

/// The linear probe (cached features, the paper's optimiser) of `backbone`,
/// its per-epoch lines for `linear.jsonl` (as the checkpoint at `step`)
/// and its last epoch.
fn probe<B: AutodiffBackend>(
    backbone: &ResNet<B::InnerBackend>,
    step: u64,
    data: (&Arc<Dataset>, &Arc<Dataset>),
    cfg: &TrainConfig,
    device: &B::Device,
    lines: &mut String,
) -> Result<ProbeEpoch, String> {
    let probe_cfg = ProbeConfig {
        image_size: cfg.image_size,
        cached_features: true,
        seed: cfg.seed,
        threads: cfg.threads,
        ..ProbeConfig::default()
    };
    let mut log = |e: &ProbeEpoch| {
        let line = ProbeLog {
            step: Some(step),
            epoch: e.clone(),
        }
        .line()?;
        lines.push_str(&line);
        Ok(())
    };
    let r = linear_probe::<B>(
        backbone,
        Arc::clone(data.0),
        Arc::clone(data.1),
        &probe_cfg,
        device,
        &Bar::new(),
        &mut log,
    )
    .map_err(|e| e.to_string())?;
    r.epochs
        .last()
        .cloned()
        .ok_or_else(|| "the linear probe ran no epoch".to_string())
}

/// Linear probe of the initial network, training, linear probe of the
/// trained one; both probes go into the run's `linear.jsonl`.
fn train_and_probe<B: AutodiffBackend + barlow::peers::PeerReduce>(
    train_ds: Arc<Dataset>,
    val_ds: Arc<Dataset>,
    cfg: &TrainConfig,
    run: &RunOptions,
    device: &B::Device,
) -> Result<(TrainSummary, ProbeEpoch, ProbeEpoch), String> {
    let data = (&train_ds, &val_ds);
    let mut lines = String::new();
    let initial = train::initial_model::<B>(cfg, None, device).map_err(|e| e.to_string())?;
    println!("linear probe of the untrained network (cached features, 100 epochs)");
    let before = probe::<B>(&initial.valid().backbone, 0, data, cfg, device, &mut lines)?;
    let (model, s) = train::train::<B>(Arc::clone(&train_ds), cfg, run, device, &Bar::new())
        .map_err(|e| e.to_string())?;
    println!("linear probe of the trained network");
    let after = probe::<B>(
        &model.valid().backbone,
        s.steps,
        data,
        cfg,
        device,
        &mut lines,
    )?;
    let path = run.out.join("linear.jsonl");
    barlow::fs::write_atomically(&path, lines.as_bytes()).map_err(|e| e.to_string())?;
    Ok((s, before, after))
}

/// Runs the demo on `choice`, or where [`BackendChoice::auto`] says.
pub fn demo(
    work: &Path,
    threads: usize,
    epochs: u64,
    choice: Option<BackendChoice>,
) -> Result<(), String> {
    let started = Instant::now();
    let choice = match choice {
        Some(c) => {
            c.check().map_err(|e| e.to_string())?;
            c
        }
        None => {
            let c = BackendChoice::auto();
            if c.kind == BackendKind::Cpu {
                println!("no usable GPU here: training on the CPU");
            }
            c
        }
    };
    let sample_dir = work.join("sample");
    let opts = SampleOptions::default();
    if sample::is_complete(&sample_dir, &opts).map_err(|e| e.to_string())? {
        println!("using existing sample images in {}", sample_dir.display());
    } else {
        let n = sample::make_sample(&sample_dir, &opts, threads, &Bar::new())
            .map_err(|e| e.to_string())?;
        println!("generated {n} sample images in {}", sample_dir.display());
    }
    let mut summary = serde_json::Map::new();
    for split in ["train", "val"] {
        let shards = work.join("shards").join(split);
        let ds = crate::data_cmd::ensure_shards(&sample_dir.join(split), &shards, threads)?;
        let report =
            shardify::check(&shards, true, threads, &Bar::new()).map_err(|e| e.to_string())?;
        if !report.ok() {
            return Err(format!(
                "{} failed its check: {}",
                shards.display(),
                report.problems.join("; ")
            ));
        }
        println!(
            "checked {}: {} records in {} shards, every checksum and decode OK",
            shards.display(),
            report.records,
            report.shards
        );
        summary.insert(format!("{split}_records"), ds.len().into());
        summary.insert("classes".into(), ds.manifest().classes.len().into());
    }
    let train_ds = open(&work.join("shards/train"))?;
    let val_ds = open(&work.join("shards/val"))?;
    let cfg = TrainConfig::demo(threads, epochs);
    let loader_rate = loader_rate(train_ds.clone(), &cfg)?;
    println!(
        "loader alone: {loader_rate:.0} images/s (two {0}x{0} views each, {threads} threads)",
        cfg.image_size
    );
    summary.insert("loader_images_per_sec".into(), loader_rate.into());
    let run_dir = work.join("run");
    let run = RunOptions {
        monitor: Some(Monitor {
            train: train_ds.clone(),
            val: Arc::clone(&val_ds),
            every_epochs: epochs.div_ceil(4).max(1),
            at_start: true,
            knn: KnnConfig::default(),
        }),
        ..RunOptions::new(&run_dir)
    };
    println!(
        "training ResNet-18 (width {}, {} px, batch {}) for {} epochs with {}; kNN (k 20) on val before, during and after",
        cfg.width,
        cfg.image_size,
        cfg.batch_size,
        cfg.epochs,
        choice.describe()
    );
    let (s, linear_before, linear_after) = barlow::with_backend!(choice, |B, device| {
        train_and_probe::<B>(train_ds, val_ds, &cfg, &run, &device)
    })
    .map_err(|e| e.to_string())??;
    let before = s.knn.first().map_or(f64::NAN, |k| k.top1);
    let after = s.knn.last().map_or(f64::NAN, |k| k.top1);
    for k in &s.knn {
        println!(
            "  kNN top-1 after {:>3} epochs: {:5.1}%  (top-5 {:5.1}%)",
            k.epoch, k.top1, k.top5
        );
    }
    let curve: Vec<(u64, f32)> = s
        .losses
        .iter()
        .step_by((s.losses.len() / 10).max(1))
        .copied()
        .collect();
    println!(
        "loss curve (step: loss): {}",
        curve
            .iter()
            .map(|(st, l)| format!("{st}: {l:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "trained {} steps in {:.1}s: {:.1} images/s, data wait {:.2}% of the time; kNN top-1 {before:.1}% -> {after:.1}%",
        s.steps,
        s.elapsed.as_secs_f64(),
        s.images_per_sec,
        100.0 * s.data_wait_share
    );
    println!(
        "linear probe top-1: {:.1}% untrained -> {:.1}% trained (top-5 {:.1}% -> {:.1}%)",
        linear_before.top1, linear_after.top1, linear_before.top5, linear_after.top5
    );
    let report =
        barlow::report::write(&run_dir, &run_dir.join("report")).map_err(|e| e.to_string())?;
    println!(
        "run folder {}: log.jsonl, knn.jsonl, linear.jsonl, loss.png, checkpoints/, backbone.bin; report {}",
        run_dir.display(),
        report[0].display()
    );
    summary.insert("backend".into(), choice.describe().into());
    summary.insert("steps".into(), s.steps.into());
    summary.insert("first_loss".into(), s.losses.first().map(|l| l.1).into());
    summary.insert("last_loss".into(), s.losses.last().map(|l| l.1).into());
    summary.insert("knn_before".into(), before.into());
    summary.insert("knn_after".into(), after.into());
    summary.insert("linear_before".into(), linear_before.top1.into());
    summary.insert("linear_after".into(), linear_after.top1.into());
    summary.insert("train_images_per_sec".into(), s.images_per_sec.into());
    summary.insert("data_wait_share".into(), s.data_wait_share.into());
    summary.insert("seconds".into(), started.elapsed().as_secs_f64().into());
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}

/// Epochs of the embedded demo.
const DEMO_EPOCHS: u64 = 20;

/// `barlow demo`'s flags.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Working folder for the sample images, shards and the run.
    #[arg(long, default_value = "barlow-demo")]
    pub work: PathBuf,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Training epochs over the 1,280 sample images.
    #[arg(long, default_value_t = DEMO_EPOCHS)]
    pub epochs: u64,
    /// Train on the CPU even where a GPU is usable (--backend cpu).
    #[arg(long, conflicts_with = "backend")]
    pub cpu: bool,
    /// cpu, cuda or vulkan [default: CUDA where usable, else a hardware
    /// Vulkan GPU (with the `vulkan` feature), else the CPU].
    #[arg(long, value_parser = choice::<BackendKind>())]
    pub backend: Option<BackendKind>,
    /// Device index for --backend cuda or vulkan.
    #[arg(long, default_value_t = 0, requires = "backend")]
    pub device: usize,
    /// Let --backend vulkan use a software adapter (for tests; slow).
    #[arg(long, requires = "backend")]
    pub allow_software: bool,
}

pub fn run(a: DemoArgs) -> Result<(), String> {
    let kind = if a.cpu {
        Some(BackendKind::Cpu)
    } else {
        a.backend
    };
    let choice = kind.map(|kind| BackendChoice {
        kind,
        device: a.device,
        allow_software: barlow::backend::software_allowed(a.allow_software),
    });
    demo(&a.work, crate::default_threads(a.threads), a.epochs, choice)
}
