//! `barlow`: the main command line. Thin glue over the library; the only
//! place (with `shardify`) that prints and chooses exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use barlow::datasets::photo_crops::{self, CropOptions};
use barlow::datasets::sample::{self, SampleOptions};
use barlow::progress::Bar;
use barlow::shard::Dataset;
use barlow::shardify::{self, Input, Layout, Options};
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
    /// them. Prints a JSON summary as its last line.
    Demo {
        /// Working folder for the sample images and shards.
        #[arg(long, default_value = "barlow-demo")]
        work: PathBuf,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
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
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn default_threads(t: Option<usize>) -> usize {
    t.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { work, threads } => demo(&work, default_threads(threads)),
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
            seed,
            threads,
        } => {
            let opts = CropOptions {
                count,
                seed,
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
    summary.insert("seconds".into(), started.elapsed().as_secs_f64().into());
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}
