//! `barlow`: the main command line. Thin glue over the library; the only
//! place (with `shardify`) that prints and chooses exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use barlow::Choice;
use barlow::backend::{BackendChoice, BackendKind};
use barlow::data::augment::AugmentConfig;
use barlow::data::loader::PixelFormat;
use barlow::data::loader::{self, LoaderConfig, Mode};
use barlow::data::sampler::{Order, SamplerConfig};
use barlow::data::shard::Dataset;
use barlow::prep::datasets::photo_crops::{self, CropOptions};
use barlow::prep::datasets::sample::{self, SampleOptions};
use barlow::prep::shardify::{self, Input, Layout, Options};
use barlow::progress::Bar;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: fast_image_resize allocates
/// its filter coefficients on every resize, from every loader worker, and
/// mimalloc's per-thread free lists serve those without contention.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod demo;
mod eval_cmd;
mod gpu_check;
mod train_cmd;

use eval_cmd::{EmbedArgs, ExportArgs, KnnArgs, LinearArgs};
use train_cmd::TrainArgs;

/// Epochs of the embedded demo.
const DEMO_EPOCHS: u64 = 20;

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// Weighted kNN accuracy (cosine, temperature 0.1) of the backbone's
    /// L2-normalised features, with --train as the memory bank and the eval
    /// transform (Resize + CenterCrop) on both sets.
    Knn(KnnArgs),
    /// Linear probe (the paper's protocol): a linear classifier trained on
    /// the frozen backbone's features of --train (RandomResizedCrop + flip
    /// views, or --cached-features), SGD momentum 0.9, weight decay 1e-6,
    /// cosine lr; top-1/top-5 on --val (eval transform) after every epoch.
    /// The last line is a JSON object.
    Linear(LinearArgs),
}

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
    /// them, measure the kNN accuracy and the linear probe of the untrained
    /// network, pretrain a small ResNet-18 with Barlow Twins for a few
    /// minutes (on a GPU where one is usable, else the CPU), measure both
    /// again, and write the run's report (WORK/run/report/index.html).
    /// Prints a JSON summary as its last line (knn_before, knn_after,
    /// linear_before, linear_after, train_images_per_sec, data_wait_share, ...).
    Demo {
        /// Working folder for the sample images, shards and the run.
        #[arg(long, default_value = "barlow-demo")]
        work: PathBuf,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Training epochs over the 1,280 sample images.
        #[arg(long, default_value_t = DEMO_EPOCHS)]
        epochs: u64,
        /// Train on the CPU even where a GPU is usable (--backend cpu).
        #[arg(long, conflicts_with = "backend")]
        cpu: bool,
        /// cpu, cuda or vulkan [default: CUDA where usable, else a hardware
        /// Vulkan GPU (with the `vulkan` feature), else the CPU].
        #[arg(long, value_parser = choice::<BackendKind>())]
        backend: Option<BackendKind>,
        /// Device index for --backend cuda or vulkan.
        #[arg(long, default_value_t = 0, requires = "backend")]
        device: usize,
        /// Let --backend vulkan use a software adapter (for tests; slow).
        #[arg(long, requires = "backend")]
        allow_software: bool,
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
        #[arg(long, value_parser = choice::<Mode>(), value_delimiter = ',', default_value = "full")]
        mode: Vec<Mode>,
        /// Output side of the views.
        #[arg(long, default_value_t = 224)]
        image_size: u32,
        #[arg(long, value_parser = choice::<PixelFormat>(), default_value = "u8")]
        format: PixelFormat,
        #[arg(long, value_parser = choice::<Order>(), default_value = "random")]
        order: Order,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object per mode (the last line is the last mode's).
        #[arg(long)]
        json: bool,
    },
    /// Pretrain with Barlow Twins. Defaults are the reference's (ResNet-50, 224 px,
    /// batch 2048, 1000 epochs); for a quick CPU run try `--arch resnet18
    /// --width 8 --small-stem --image-size 32 --batch-size 64 --projector
    /// 256-256`. Checkpoints every epoch into OUT/checkpoints; `--resume`
    /// continues exactly where the run stopped.
    Train(Box<TrainArgs>),
    /// Check that a GPU backend computes what the CPU backend computes, on
    /// this machine: dtypes, the u8 upload and normalisation (bit for bit),
    /// three training steps of the demo network (loss, gradient norms,
    /// weights), three in bf16 mixed precision where the device has bf16,
    /// a checkpoint moved each way, and when losses leave the device.
    /// Prints a table, writes OUT/gpu-check.json and exits 1 if a check
    /// fails.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Evaluate a checkpoint or a torchvision-named weights file.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Write a checkpoint's backbone as safetensors with torchvision's
    /// ResNet names, shapes and layouts: `torchvision.models.resnet50()`
    /// with `fc = nn.Identity()` loads it with strict=True.
    Export(ExportArgs),
    /// Backbone features (eval transform, not normalised): of every record
    /// of a dataset into a .npy or .safetensors file, or of one image,
    /// printed as a JSON array on the last line.
    Embed(EmbedArgs),
    /// Write RUN/report/: a self-contained HTML page (SVG charts) and PNG
    /// charts of a run: loss, learning rates, images/s and data wait, kNN
    /// and linear accuracy, and the run's config.
    Report {
        /// The run folder (`barlow train --out`).
        run: PathBuf,
        /// Folder to write [default: RUN/report].
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    /// Generate the procedural sample dataset (8 patterns in colours from a
    /// shared palette; class = pattern) as JPEG files in ImageFolder layout:
    /// OUT/train/<class>/, OUT/val/<class>/.
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

/// A command-line parser for a library [`Choice`]: its names are the
/// possible values `--help` lists.
pub(crate) fn choice<T: Choice + Clone + Send + Sync>()
-> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(T::NAMES.iter().map(|(_, n)| *n))
        .try_map(|s: String| T::from_name(&s).ok_or_else(|| format!("unknown value {s}")))
}

pub(crate) fn default_threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// mimalloc hands freed pages back to the OS after 10 ms by default. A CPU
/// training step frees and re-allocates buffers of hundreds of MiB, which
/// the kernel then zeroes again on every fault: a fifth of a ResNet-50
/// step's time (BENCHMARKS.md, CPU training speed). Keeping freed memory
/// for reuse costs only that the process stays at its peak RSS. Set for
/// the commands that run the network.
/// `MIMALLOC_PURGE_DELAY` in the environment still decides when set.
#[cfg(feature = "mimalloc")]
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc's option enum (v2 and v3).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores one integer option; it is not
        // thread-safe, and it runs here at the start of `main`, before any
        // thread of ours exists.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that run the network; the loader alone and the data tools
    // keep mimalloc's default.
    #[cfg(feature = "mimalloc")]
    if matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Train(_)
            | Command::Eval(_)
            | Command::Embed(_)
            | Command::Export(_)
            | Command::GpuCheck(_)
    ) {
        keep_freed_memory();
    }
    let result = match cli.command {
        Command::Demo {
            work,
            threads,
            epochs,
            cpu,
            backend,
            device,
            allow_software,
        } => {
            let kind = if cpu { Some(BackendKind::Cpu) } else { backend };
            let choice = kind.map(|kind| BackendChoice {
                kind,
                device,
                allow_software: barlow::backend::software_allowed(allow_software),
            });
            demo::demo(&work, default_threads(threads), epochs, choice)
        }
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
        // A run stopped by SIGINT/SIGTERM exits with 130 (interrupted) after
        // its final checkpoint, so that `barlow train ... && next` stops too.
        Command::Train(args) => match train_cmd::run_train(*args) {
            Ok(true) => return ExitCode::from(130),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        },
        Command::Eval(EvalCommand::Knn(args)) => eval_cmd::run_knn(args),
        Command::Eval(EvalCommand::Linear(args)) => eval_cmd::run_linear(args),
        Command::Export(args) => eval_cmd::run_export(args),
        Command::GpuCheck(args) => gpu_check::run(args),
        Command::Embed(args) => eval_cmd::run_embed(args),
        Command::Report { run, out } => {
            let out = out.unwrap_or_else(|| run.join("report"));
            barlow::report::write(&run, &out)
                .map(|files| {
                    println!("wrote {}", out.join("index.html").display());
                    for f in files.iter().filter(|f| !f.ends_with("index.html")) {
                        println!("  {}", f.display());
                    }
                })
                .map_err(|e| e.to_string())
        }
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
pub(crate) fn ensure_shards(
    images: &Path,
    shards: &Path,
    threads: usize,
) -> Result<Dataset, String> {
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
        "dataset {}: {} records; {} threads, batch {}, views {}x{} {}",
        data.display(),
        ds.len(),
        base.threads,
        base.sampler.batch_size,
        base.augment.size,
        base.augment.size,
        base.format.name()
    );
    let mib = |b: Option<u64>| {
        b.map_or("?".into(), |b| {
            format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
        })
    };
    let mut reports = Vec::new();
    for &mode in modes {
        let cfg = LoaderConfig {
            mode,
            ..base.clone()
        };
        let r = loader::bench(Arc::clone(&ds), &cfg, warmup, batches).map_err(|e| e.to_string())?;
        println!(
            "mode {:<7} {:>8.1} images/s ({} images in {:.2}s); data wait {:.2}s; decode failures {}",
            mode.name(),
            r.images_per_sec(),
            r.images,
            r.seconds,
            r.stats.data_wait.as_secs_f64(),
            r.stats.decode_failures
        );
        let total: f64 = r.stats.ms_per_image().iter().map(|s| s.1).sum();
        for (name, ms) in r.stats.ms_per_image() {
            if ms > 0.0 {
                println!(
                    "    {name:<12} {ms:>7.3} ms/image  {:>5.1}%",
                    100.0 * ms / total.max(1e-12)
                );
            }
        }
        println!(
            "    memory: batch buffers {}; RssAnon {} -> {}",
            mib(Some(r.buffer_bytes as u64)),
            mib(r.rss_anon_before),
            mib(r.rss_anon_after)
        );
        reports.push(r);
    }
    let rate = |m: Mode| {
        reports
            .iter()
            .find(|r| r.mode == m)
            .map(|r| r.images_per_sec())
    };
    if let (Some(d), Some(f)) = (rate(Mode::Decode), rate(Mode::Full)) {
        println!("full / decode = {:.1}%", 100.0 * f / d);
    }
    if json {
        for r in &reports {
            println!("{}", r.to_json());
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
    let grid = barlow::prep::preview::preview_grid(&ds, &cfg, seed, epoch, n)
        .map_err(|e| e.to_string())?;
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
