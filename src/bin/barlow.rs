//! `barlow`: the main command line. Thin glue over the library; the only
//! place (with `shardify`) that prints and chooses exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use barlow::augment::AugmentConfig;
use barlow::batch::PixelFormat;
use barlow::datasets::photo_crops::{self, CropOptions};
use barlow::datasets::sample::{self, SampleOptions};
use barlow::loader::{Loader, LoaderConfig, Mode};
use barlow::model::{Arch, parse_projector};
use barlow::progress::Bar;
use barlow::sampler::{Order, Position, SamplerConfig};
use barlow::shard::Dataset;
use barlow::shardify::{self, Input, Layout, Options};
use barlow::train::{TrainConfig, train};
use clap::{Parser, Subcommand};

/// Barlow Twins self-supervised pretraining with a streaming data loader.
#[derive(Parser, Debug)]
#[command(name = "barlow", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded end-to-end job on generated sample data: generate the
    /// sample set (if absent), shardify its train and val splits, verify
    /// them, and stream two epochs of two-view batches through the loader.
    /// Prints a JSON summary as its last line.
    Demo {
        /// Working folder for the sample images and shards.
        #[arg(long, default_value = "barlow-demo")]
        work: PathBuf,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Measure the loader's throughput on a shardified dataset: images/s
    /// (one image = one source image yielding two views) and where the time
    /// goes (decode, crop+resize, colour, blur, write). The last line of
    /// output is a JSON object.
    BenchLoader {
        /// Dataset folder (made by shardify).
        #[arg(long)]
        data: PathBuf,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Batches timed (after the warm-up).
        #[arg(long, default_value_t = 40)]
        batches: usize,
        /// Batches taken before timing starts.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// What runs: decode only, decode + augment, or full batches. Several
        /// modes, comma-separated, run one after the other on the same files.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "full")]
        mode: Vec<Mode>,
        /// Output side of the views.
        #[arg(long, default_value_t = 224)]
        image_size: u32,
        #[arg(long, value_enum, default_value = "u8")]
        format: PixelFormat,
        #[arg(long, value_enum, default_value = "random")]
        order: Order,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object per mode (the last line is the last mode's).
        #[arg(long)]
        json: bool,
    },
    /// Pretrain with Barlow Twins on the CPU (Flex backend). Defaults are
    /// SPEC's (ResNet-50, 224 px, batch 2048, 1000 epochs); for a quick CPU
    /// run try `--arch resnet18 --width 16 --small-stem --image-size 64
    /// --batch-size 64 --projector 512-512-512`. Writes RUN_DIR/log.jsonl.
    /// (Checkpoints, --resume, CUDA and the kNN monitor are not built yet.)
    Train(TrainArgs),
    /// Draw a grid of source images and their two augmented views.
    Preview {
        /// Dataset folder (made by shardify).
        #[arg(long)]
        data: PathBuf,
        /// PNG file to write.
        #[arg(long)]
        out: PathBuf,
        /// Number of source images (rows).
        #[arg(long, default_value_t = 8)]
        n: usize,
        #[arg(long, default_value_t = 224)]
        image_size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        epoch: u64,
    },
    /// Generate the procedural sample dataset (shapes; class = shape) as JPEG
    /// files in ImageFolder layout: OUT/train/<class>/, OUT/val/<class>/.
    MakeSample {
        /// Folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Number of classes (1 to 8).
        #[arg(long, default_value_t = SampleOptions::default().classes)]
        classes: usize,
        #[arg(long, default_value_t = SampleOptions::default().train_per_class)]
        train_per_class: usize,
        #[arg(long, default_value_t = SampleOptions::default().val_per_class)]
        val_per_class: usize,
        #[arg(long, default_value_t = SampleOptions::default().min_side)]
        min_side: u32,
        #[arg(long, default_value_t = SampleOptions::default().max_side)]
        max_side: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Cut ImageNet-sized JPEG crops (long side 330-500 px, quality 85-95,
    /// 4:2:0) out of large photos, for loader benchmarks on real images.
    MakePhotoCrops {
        /// Folders searched (recursively) for source photos.
        #[arg(long = "src", required = true)]
        sources: Vec<PathBuf>,
        /// Folder to write (one sub-folder per source photo).
        #[arg(long)]
        out: PathBuf,
        /// Number of crops.
        #[arg(long, default_value_t = 3000)]
        count: usize,
        /// Skip sources whose trial crops average fewer bits per pixel at
        /// JPEG quality 90 (flat graphics decode faster than photos).
        #[arg(long, default_value_t = CropOptions::default().min_bpp)]
        min_bpp: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// `barlow train`'s flags (SPEC's defaults).
#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Dataset folder (made by shardify).
    #[arg(long)]
    data: PathBuf,
    /// Run folder for the log.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "resnet50")]
    arch: Arch,
    /// Base width of the ResNet (64 = torchvision's).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// 3x3 stride-1 stem without max-pool, for small images.
    #[arg(long)]
    small_stem: bool,
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    #[arg(long, default_value_t = 2048)]
    batch_size: usize,
    #[arg(long, default_value_t = 1000)]
    epochs: u64,
    /// Stop after this many steps (the schedule still spans --epochs).
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long, default_value_t = 0.0051)]
    lambda: f32,
    /// Peak rate of the weights, times batch/256.
    #[arg(long, default_value_t = 0.2)]
    lr_weights: f64,
    /// Peak rate of biases and BN parameters, times batch/256.
    #[arg(long, default_value_t = 0.0048)]
    lr_biases: f64,
    #[arg(long, default_value_t = 1e-6)]
    weight_decay: f64,
    /// Projector widths, SPEC's notation.
    #[arg(long, default_value = "8192-8192-8192")]
    projector: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Loader threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 10)]
    log_every: u64,
}

fn default_threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { work, threads } => demo(&work, default_threads(threads)),
        Command::BenchLoader {
            data,
            threads,
            batch_size,
            batches,
            warmup,
            mode,
            image_size,
            format,
            order,
            seed,
            json,
        } => {
            let cfg = LoaderConfig {
                sampler: SamplerConfig {
                    seed,
                    batch_size,
                    order,
                    ..SamplerConfig::default()
                },
                augment: AugmentConfig {
                    size: image_size,
                    ..AugmentConfig::default()
                },
                threads: default_threads(threads),
                format,
                ..LoaderConfig::default()
            };
            bench_loader(&data, &cfg, &mode, warmup, batches, json)
        }
        Command::Train(args) => run_train(args),
        Command::Preview {
            data,
            out,
            n,
            image_size,
            seed,
            epoch,
        } => preview(&data, &out, n, image_size, seed, epoch),
        Command::MakeSample {
            out,
            classes,
            train_per_class,
            val_per_class,
            min_side,
            max_side,
            seed,
            threads,
        } => {
            let opts = SampleOptions {
                classes,
                train_per_class,
                val_per_class,
                min_side,
                max_side,
                seed,
                ..SampleOptions::default()
            };
            sample::make_sample(&out, &opts, default_threads(threads), &Bar::new())
                .map(|n| println!("wrote {n} images to {}", out.display()))
                .map_err(|e| e.to_string())
        }
        Command::MakePhotoCrops {
            sources,
            out,
            count,
            min_bpp,
            seed,
            threads,
        } => {
            let opts = CropOptions {
                count,
                seed,
                min_bpp,
                ..CropOptions::default()
            };
            photo_crops::make_photo_crops(
                &sources,
                &out,
                &opts,
                default_threads(threads),
                &Bar::new(),
            )
            .map(|s| {
                println!(
                    "wrote {} crops ({:.1} MiB) from {} source photos to {}",
                    s.crops,
                    s.bytes as f64 / (1 << 20) as f64,
                    s.sources_used,
                    out.display()
                );
                for (p, why) in &s.sources_skipped {
                    println!("  skipped {}: {why}", p.display());
                }
            })
            .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("barlow: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Shardifies `images` into `shards` unless a valid dataset is already there.
fn ensure_shards(images: &Path, shards: &Path, threads: usize) -> Result<Dataset, String> {
    if let Ok(ds) = Dataset::open(shards) {
        println!(
            "using existing dataset {} ({} records)",
            shards.display(),
            ds.len()
        );
        return Ok(ds);
    }
    let opts = Options {
        threads,
        overwrite: true,
        ..Options::default()
    };
    let input = Input::Folder {
        path: images.to_path_buf(),
        layout: Layout::ImageFolder,
    };
    let s = shardify::shardify(&input, shards, &opts, &Bar::new()).map_err(|e| e.to_string())?;
    println!(
        "shardified {} -> {}: {} records in {} shards, {} rejected, {:.2}s",
        images.display(),
        shards.display(),
        s.records,
        s.shards,
        s.rejected.len(),
        s.elapsed.as_secs_f64()
    );
    Dataset::open(shards).map_err(|e| e.to_string())
}

fn demo(work: &Path, threads: usize) -> Result<(), String> {
    let started = std::time::Instant::now();
    let sample_dir = work.join("sample");
    let opts = SampleOptions::default();
    if sample::is_complete(&sample_dir, &opts) {
        println!("using existing sample images in {}", sample_dir.display());
    } else {
        let n = sample::make_sample(&sample_dir, &opts, threads, &Bar::new())
            .map_err(|e| e.to_string())?;
        println!("generated {n} sample images in {}", sample_dir.display());
    }
    let mut summary = serde_json::Map::new();
    for split in ["train", "val"] {
        let shards = work.join("shards").join(split);
        let ds = ensure_shards(&sample_dir.join(split), &shards, threads)?;
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
    // Stream two-view batches from the train shards, as training will.
    let ds = Arc::new(Dataset::open(work.join("shards").join("train")).map_err(|e| e.to_string())?);
    let cfg = LoaderConfig {
        sampler: SamplerConfig {
            batch_size: 64,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: 96,
            ..AugmentConfig::default()
        },
        threads,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(ds, cfg, Position::default()).map_err(|e| e.to_string())?;
    let t = std::time::Instant::now();
    let mut images = 0;
    for _ in 0..2 * loader.sampler().batches_per_epoch() {
        images += loader.next_batch().map_err(|e| e.to_string())?.len();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "loader: {images} images (two 96x96 views each) over 2 epochs in {secs:.2}s: {:.0} images/s",
        images as f64 / secs
    );
    summary.insert(
        "loader_images_per_sec".into(),
        (images as f64 / secs).into(),
    );
    summary.insert("seconds".into(), started.elapsed().as_secs_f64().into());
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}

/// Resident anonymous memory of this process in bytes (Linux), if known.
fn rss_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Decode => "decode",
        Mode::Augment => "augment",
        Mode::Full => "full",
    }
}

fn bench_loader(
    data: &Path,
    base: &LoaderConfig,
    modes: &[Mode],
    warmup: usize,
    batches: usize,
    json: bool,
) -> Result<(), String> {
    let ds = Arc::new(Dataset::open(data).map_err(|e| e.to_string())?);
    println!(
        "dataset {}: {} records; {} threads, batch {}, views {}x{} {:?}",
        data.display(),
        ds.len(),
        base.threads,
        base.sampler.batch_size,
        base.augment.size,
        base.augment.size,
        base.format
    );
    let mut results = Vec::new();
    for &mode in modes {
        let cfg = LoaderConfig {
            mode,
            ..base.clone()
        };
        let rss_before = rss_anon();
        let mut loader = Loader::new(Arc::clone(&ds), cfg.clone(), Position::default())
            .map_err(|e| e.to_string())?;
        for _ in 0..warmup {
            loader.next_batch().map_err(|e| e.to_string())?;
        }
        let s0 = loader.stats();
        let t0 = std::time::Instant::now();
        let mut images = 0usize;
        for _ in 0..batches {
            let b = loader.next_batch().map_err(|e| e.to_string())?;
            images += b.len();
        }
        let secs = t0.elapsed().as_secs_f64();
        let s1 = loader.stats();
        let rss_after = rss_anon();
        let buffers = loader.buffer_bytes();
        drop(loader);
        let ips = images as f64 / secs;
        let thread_s = |a: std::time::Duration, b: std::time::Duration| (a - b).as_secs_f64();
        let stages = [
            ("read", thread_s(s1.read, s0.read)),
            ("decode", thread_s(s1.decode, s0.decode)),
            (
                "crop+resize",
                thread_s(s1.stages.crop_resize, s0.stages.crop_resize),
            ),
            ("colour", thread_s(s1.stages.colour, s0.stages.colour)),
            ("blur", thread_s(s1.stages.blur, s0.stages.blur)),
            ("write", thread_s(s1.stages.write, s0.stages.write)),
        ];
        let total: f64 = stages.iter().map(|s| s.1).sum();
        println!(
            "mode {:<7} {:>8.1} images/s ({images} images in {secs:.2}s); data wait {:.2}s; decode failures {}",
            mode_name(mode),
            ips,
            (s1.data_wait - s0.data_wait).as_secs_f64(),
            s1.decode_failures
        );
        for (name, t) in stages {
            if t > 0.0 {
                println!(
                    "    {name:<12} {:>7.3} ms/image  {:>5.1}%",
                    1e3 * t / images.max(1) as f64,
                    100.0 * t / total.max(1e-12)
                );
            }
        }
        println!(
            "    memory: batch buffers {:.1} MiB; RssAnon {} -> {}",
            buffers as f64 / (1 << 20) as f64,
            rss_before.map_or("?".into(), |b| format!(
                "{:.1} MiB",
                b as f64 / (1 << 20) as f64
            )),
            rss_after.map_or("?".into(), |b| format!(
                "{:.1} MiB",
                b as f64 / (1 << 20) as f64
            ))
        );
        let mut obj = serde_json::json!({
            "images_per_sec": ips,
            "mode": mode_name(mode),
            "threads": cfg.threads,
            "batch_size": cfg.sampler.batch_size,
            "image_size": cfg.augment.size,
            "images": images,
            "seconds": secs,
            "data_wait_sec": (s1.data_wait - s0.data_wait).as_secs_f64(),
            "decode_failures": s1.decode_failures,
            "buffer_bytes": buffers,
            "rss_anon_bytes": rss_after,
        });
        for (name, t) in stages {
            obj[format!("{}_ms_per_image", name.replace('+', "_"))] =
                (1e3 * t / images.max(1) as f64).into();
        }
        results.push((mode, ips, obj));
    }
    let rate = |m: Mode| results.iter().find(|r| r.0 == m).map(|r| r.1);
    if let (Some(d), Some(f)) = (rate(Mode::Decode), rate(Mode::Full)) {
        println!("full / decode = {:.1}%", 100.0 * f / d);
    }
    if json {
        for (_, _, obj) in &results {
            println!("{obj}");
        }
    }
    Ok(())
}

fn preview(
    data: &Path,
    out: &Path,
    n: usize,
    size: u32,
    seed: u64,
    epoch: u64,
) -> Result<(), String> {
    let ds = Dataset::open(data).map_err(|e| e.to_string())?;
    let cfg = AugmentConfig {
        size,
        ..AugmentConfig::default()
    };
    let grid =
        barlow::preview::preview_grid(&ds, &cfg, seed, epoch, n).map_err(|e| e.to_string())?;
    image::save_buffer(
        out,
        &grid.pixels,
        grid.width,
        grid.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "wrote {} ({}x{}): {} rows of source | view 1 | view 2",
        out.display(),
        grid.width,
        grid.height,
        n.min(ds.len() as usize)
    );
    Ok(())
}

fn run_train(a: TrainArgs) -> Result<(), String> {
    let cfg = TrainConfig {
        arch: a.arch,
        width: a.width,
        small_stem: a.small_stem,
        image_size: a.image_size,
        batch_size: a.batch_size,
        epochs: a.epochs,
        max_steps: a.max_steps,
        lambda: a.lambda,
        lr_weights: a.lr_weights,
        lr_biases: a.lr_biases,
        weight_decay: a.weight_decay,
        projector: parse_projector(&a.projector).map_err(|e| format!("--projector: {e}"))?,
        seed: a.seed,
        threads: default_threads(a.threads),
        log_every: a.log_every,
    };
    let ds = Arc::new(Dataset::open(&a.data).map_err(|e| e.to_string())?);
    let (_, s) = train(ds, &cfg, &a.out, &Bar::new()).map_err(|e| e.to_string())?;
    let first = s.losses.first().map_or(f32::NAN, |l| l.1);
    let last = s.losses.last().map_or(f32::NAN, |l| l.1);
    println!(
        "{} steps in {:.1}s: {:.1} images/s, data wait {:.1}% of the time; loss {first:.1} -> {last:.1}",
        s.steps,
        s.elapsed.as_secs_f64(),
        s.images_per_sec,
        100.0 * s.data_wait_share
    );
    println!(
        "{}",
        serde_json::json!({
            "steps": s.steps,
            "train_images_per_sec": s.images_per_sec,
            "data_wait_share": s.data_wait_share,
            "first_loss": first,
            "last_loss": last,
        })
    );
    Ok(())
}
