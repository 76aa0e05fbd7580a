//! `barlow`: the main command line. Thin glue over the library; the only
//! place (with `shardify`) that prints and chooses exit codes.

use std::process::ExitCode;

use barlow::Choice;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: fast_image_resize allocates
/// its filter coefficients on every resize, from every loader worker, and
/// mimalloc's per-thread free lists serve those without contention.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod data_cmd;
mod demo;
mod eval_cmd;
mod gpu_check;
mod remote_args;
mod train_cmd;

use data_cmd::{BenchLoaderArgs, MakePhotoCropsArgs, MakeSampleArgs, PreviewArgs};
use demo::DemoArgs;
use eval_cmd::{EmbedArgs, ExportArgs, KnnArgs, LinearArgs, ReportArgs};
use train_cmd::TrainArgs;

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
    Demo(DemoArgs),
    /// Measure the loader's throughput on a shardified dataset: images/s
    /// (one image = one source image yielding two views) and where the time
    /// goes (decode, crop+resize, colour, blur, write). The last line of
    /// output is a JSON object.
    BenchLoader(BenchLoaderArgs),
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
    /// and linear accuracy, the peers' sums (several peers), and the run's
    /// config.
    Report(ReportArgs),
    /// Draw a grid of source images and their two augmented views.
    Preview(PreviewArgs),
    /// Generate the procedural sample dataset (8 patterns in colours from a
    /// shared palette; class = pattern) as JPEG files in ImageFolder layout:
    /// OUT/train/<class>/, OUT/val/<class>/.
    MakeSample(MakeSampleArgs),
    /// Cut ImageNet-sized JPEG crops (long side 330-500 px, quality 85-95,
    /// 4:2:0) out of large photos, for loader benchmarks on real images.
    MakePhotoCrops(MakePhotoCropsArgs),
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
    match &cli.command {
        Command::BenchLoader(a) => a.remote.install(),
        Command::Preview(a) => a.remote.install(),
        Command::Train(a) => a.remote.install(),
        Command::Embed(a) => a.remote.install(),
        Command::Eval(EvalCommand::Knn(a)) => a.remote.install(),
        Command::Eval(EvalCommand::Linear(a)) => a.remote.install(),
        _ => {}
    }
    // Commands that run the network; the loader alone and the data tools
    // keep mimalloc's default.
    #[cfg(feature = "mimalloc")]
    if matches!(
        cli.command,
        Command::Demo(_)
            | Command::Train(_)
            | Command::Eval(_)
            | Command::Embed(_)
            | Command::Export(_)
            | Command::GpuCheck(_)
    ) {
        keep_freed_memory();
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::BenchLoader(args) => data_cmd::run_bench_loader(args),
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
        Command::Report(args) => eval_cmd::run_report(args),
        Command::Preview(args) => data_cmd::run_preview(args),
        Command::MakeSample(args) => data_cmd::run_make_sample(args),
        Command::MakePhotoCrops(args) => data_cmd::run_make_photo_crops(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("barlow: {e}");
            ExitCode::FAILURE
        }
    }
}
