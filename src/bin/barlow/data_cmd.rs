//! The commands on data: `bench-loader`, `preview`, `make-sample` and
//! `make-photo-crops`, and the shardifying the demo shares.

use std::path::Path;
use std::sync::Arc;

use barlow::Choice;
use barlow::data::augment::AugmentConfig;
use barlow::data::loader::{self, Bench, LoaderConfig, Mode, PixelFormat, ReadPath};
use barlow::data::sampler::{Order, SamplerConfig};
use barlow::data::shard::Dataset;
use barlow::prep::datasets::photo_crops::{self, CropOptions};
use barlow::prep::datasets::sample::{self, SampleOptions};
use barlow::prep::shardify::{self, Input, Layout, Options};
use barlow::progress::Bar;
use std::path::PathBuf;

use crate::{choice, default_threads};

/// `barlow bench-loader`'s flags.
#[derive(clap::Args, Debug)]
pub struct BenchLoaderArgs {
    /// Dataset (made by shardify): a folder, or an object-store prefix
    /// (s3://bucket/prefix, gs://, az://, https://) read through --cache-dir.
    #[arg(long)]
    pub data: PathBuf,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Batches timed (after the warm-up).
    #[arg(long, default_value_t = 40)]
    pub batches: usize,
    /// Batches taken before timing starts.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// What runs: decode only, decode + augment, or full batches. Several
    /// modes, comma-separated, run one after the other on the same files.
    #[arg(long, value_parser = choice::<Mode>(), value_delimiter = ',', default_value = "full")]
    pub mode: Vec<Mode>,
    /// Output side of the views.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    #[arg(long, value_parser = choice::<PixelFormat>(), default_value = "u8")]
    pub format: PixelFormat,
    /// The sampling order (`blocked` reads runs of --block consecutive
    /// records, shuffled within windows of --window blocks: what a remote
    /// dataset with a cache smaller than itself needs).
    #[arg(long, value_parser = choice::<Order>(), default_value = "random")]
    pub order: Order,
    /// With --order blocked: records per block (and per fetched piece of a
    /// remote dataset).
    #[arg(long, default_value_t = 256)]
    pub block: usize,
    /// With --order blocked: blocks per shuffle window.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object per mode (the last line is the last mode's).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub damaged: crate::train_cmd::DamageArgs,
    /// How workers read records: straight out of the memory maps, the maps
    /// with access hints and read-ahead in the sampler's order, or pread
    /// into reused buffers with the same read-ahead; auto: the maps when
    /// the dataset takes at most half the memory, else pread.
    #[arg(long, value_parser = choice::<ReadPath>(), default_value = "auto")]
    pub read: ReadPath,
    /// Drop the dataset's pages from the page cache first: the run reads
    /// from the disk, as a dataset larger than memory does (pages this
    /// process has mapped stay: give one --mode per run with --read map).
    #[arg(long)]
    pub evict: bool,
    /// Print a CRC-32 of every batch (views, labels, records): two runs
    /// with equal checksums delivered the same batches.
    #[arg(long)]
    pub checksum: bool,
    #[command(flatten)]
    pub remote: crate::remote_args::RemoteArgs,
}

/// Measures the loader on `--data` in each `--mode`.
pub fn run_bench_loader(a: BenchLoaderArgs) -> Result<(), String> {
    let cfg = LoaderConfig {
        sampler: SamplerConfig {
            seed: a.seed,
            batch_size: a.batch_size,
            order: a.order,
            block: a.block,
            window: a.window,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: a.image_size,
            ..AugmentConfig::default()
        },
        threads: default_threads(a.threads),
        format: a.format,
        on_damaged: a.damaged.on_damaged,
        max_damaged: a.damaged.max_damaged,
        read: a.read,
        ..LoaderConfig::default()
    };
    let run = Bench {
        warmup: a.warmup,
        batches: a.batches,
        checksum: a.checksum,
    };
    bench_loader(&a.data, &cfg, &a.mode, run, a.json, a.evict)
}

fn bench_loader(
    data: &Path,
    base: &LoaderConfig,
    modes: &[Mode],
    run: Bench,
    json: bool,
    evict: bool,
) -> Result<(), String> {
    let ds = crate::remote_args::open_with(data, base.sampler.block)?;
    if let Some(line) = crate::remote_args::describe(&ds) {
        println!("{line}");
    }
    println!(
        "dataset {}: {} records; {} threads, batch {}, views {}x{} {}, {} order, read {}",
        data.display(),
        ds.len(),
        base.threads,
        base.sampler.batch_size,
        base.augment.size,
        base.augment.size,
        base.format.name(),
        base.sampler.order.name(),
        base.read.name()
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
        if evict {
            ds.evict().map_err(|e| e.to_string())?;
        }
        let r = loader::bench(Arc::clone(&ds), &cfg, run).map_err(|e| e.to_string())?;
        println!(
            "mode {:<7} {:>8.1} images/s ({} images in {:.2}s, read {}); data wait {:.2}s; decode failures {}; damaged records skipped {}",
            mode.name(),
            r.images_per_sec(),
            r.images,
            r.seconds,
            r.read.name(),
            r.stats.data_wait.as_secs_f64(),
            r.stats.decode_failures,
            r.stats.damaged_records
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
            "    memory: batch buffers {}; RssAnon {} -> {}; {} major faults, {} read from storage",
            mib(Some(r.buffer_bytes as u64)),
            mib(r.rss_anon_before),
            mib(r.rss_anon_after),
            r.major_faults.map_or("?".into(), |n| n.to_string()),
            mib(r.read_bytes)
        );
        if r.stats.network_wait > std::time::Duration::ZERO {
            println!(
                "    network wait {:.2}s (worker time)",
                r.stats.network_wait.as_secs_f64()
            );
        }
        #[cfg(feature = "remote")]
        if let Some(n) = &r.net {
            println!(
                "    network: {} requests, {} received, {} retries; {} pieces fetched, {} refetched, {} evicted; cache {} (peak {}, limit {}, {} fetches past it)",
                n.requests,
                mib(Some(n.bytes)),
                n.retries,
                n.pieces_fetched,
                n.refetched,
                n.evicted,
                mib(Some(n.cache_bytes)),
                mib(Some(n.cache_peak)),
                mib(Some(n.cache_limit)),
                n.over_limit
            );
        }
        if let Some(crc) = r.batches_crc32 {
            println!("    batches checksum {crc:08x}");
        }
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

/// `barlow preview`'s flags.
#[derive(clap::Args, Debug)]
pub struct PreviewArgs {
    /// Dataset (made by shardify): a folder, or an object-store prefix
    /// (s3://bucket/prefix, gs://, az://, https://) read through --cache-dir.
    #[arg(long)]
    pub data: PathBuf,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of source images (rows).
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    #[command(flatten)]
    pub remote: crate::remote_args::RemoteArgs,
}

pub fn run_preview(a: PreviewArgs) -> Result<(), String> {
    preview(&a.data, &a.out, a.n, a.image_size, a.seed, a.epoch)
}

fn preview(
    data: &Path,
    out: &Path,
    n: usize,
    size: u32,
    seed: u64,
    epoch: u64,
) -> Result<(), String> {
    let ds = crate::remote_args::open(data)?;
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

/// `barlow make-sample`'s flags.
#[derive(clap::Args, Debug)]
pub struct MakeSampleArgs {
    /// Folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of classes (1 to 8).
    #[arg(long, default_value_t = SampleOptions::default().classes)]
    pub classes: usize,
    #[arg(long, default_value_t = SampleOptions::default().train_per_class)]
    pub train_per_class: usize,
    #[arg(long, default_value_t = SampleOptions::default().val_per_class)]
    pub val_per_class: usize,
    #[arg(long, default_value_t = SampleOptions::default().min_side)]
    pub min_side: u32,
    #[arg(long, default_value_t = SampleOptions::default().max_side)]
    pub max_side: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run_make_sample(a: MakeSampleArgs) -> Result<(), String> {
    let opts = SampleOptions {
        classes: a.classes,
        train_per_class: a.train_per_class,
        val_per_class: a.val_per_class,
        min_side: a.min_side,
        max_side: a.max_side,
        seed: a.seed,
        ..SampleOptions::default()
    };
    sample::make_sample(&a.out, &opts, default_threads(a.threads), &Bar::new())
        .map(|n| println!("wrote {n} images to {}", a.out.display()))
        .map_err(|e| e.to_string())
}

/// `barlow make-photo-crops`' flags.
#[derive(clap::Args, Debug)]
pub struct MakePhotoCropsArgs {
    /// Folders searched (recursively) for source photos.
    #[arg(long = "src", required = true)]
    pub sources: Vec<PathBuf>,
    /// Folder to write (one sub-folder per source photo).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of crops.
    #[arg(long, default_value_t = 3000)]
    pub count: usize,
    /// Skip sources whose trial crops average fewer bits per pixel at
    /// JPEG quality 90 (flat graphics decode faster than photos).
    #[arg(long, default_value_t = CropOptions::default().min_bpp)]
    pub min_bpp: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run_make_photo_crops(a: MakePhotoCropsArgs) -> Result<(), String> {
    let opts = CropOptions {
        count: a.count,
        seed: a.seed,
        min_bpp: a.min_bpp,
        ..CropOptions::default()
    };
    let s = photo_crops::make_photo_crops(
        &a.sources,
        &a.out,
        &opts,
        default_threads(a.threads),
        &Bar::new(),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "wrote {} crops ({:.1} MiB) from {} source photos to {}",
        s.crops,
        s.bytes as f64 / (1 << 20) as f64,
        s.sources_used,
        a.out.display()
    );
    for (p, why) in &s.sources_skipped {
        println!("  skipped {}: {why}", p.display());
    }
    Ok(())
}

/// Shardifies `images` into `shards` unless a valid dataset is already there.
pub fn ensure_shards(images: &Path, shards: &Path, threads: usize) -> Result<Dataset, String> {
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
