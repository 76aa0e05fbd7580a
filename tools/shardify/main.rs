//! `shardify`: turns an ImageFolder tree, a flat folder of images or a file
//! list into a barlow dataset folder (shards + manifest), or checks one.
//! Thin glue over `barlow::prep::shardify`.

use std::path::PathBuf;
use std::process::ExitCode;

use barlow::Choice;
use barlow::data::source::{Location, RemoteOptions};
use barlow::prep::shardify::{self, Input, Layout, Options};
use barlow::progress::{Bar, Progress};
use clap::Parser;

/// Turn a folder of images into memory-mappable barlow shards.
///
/// INPUT is an ImageFolder tree (one sub-folder per class, torchvision's
/// layout; labels follow the sorted class names), a folder of unlabelled
/// images, or with --file-list a text file of `path<TAB>label` lines.
/// OUTPUT receives shard-NNNNN.bshard files, manifest.json (written last) and
/// rejects.tsv (every file left out, with its reason).
///
/// OUTPUT (and --check's DIR) may be an object-store prefix instead
/// (s3://bucket/prefix, gs://, az://): the dataset is written to a staging
/// folder under --cache-dir, then uploaded, the manifest last.
///
/// JPEGs are stored byte for byte (unless --max-side); other decodable
/// formats are re-encoded as JPEG. Broken files are rejected and listed,
/// never fatal. An interrupted run resumes when rerun with the same
/// arguments.
#[derive(Parser, Debug)]
#[command(name = "shardify", version, verbatim_doc_comment)]
struct Cli {
    /// Images to read: a folder, or a file list with --file-list.
    #[arg(required_unless_present = "check")]
    input: Option<PathBuf>,
    /// Dataset folder to write.
    #[arg(required_unless_present = "check")]
    output: Option<PathBuf>,
    /// Verify the dataset folder DIR (every checksum) and report, instead of
    /// writing one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["input", "output"])]
    check: Option<PathBuf>,
    /// With --check: also decode every record.
    #[arg(long, requires = "check")]
    decode: bool,
    /// INPUT is a text file: one `path<TAB>label` or `path` per line,
    /// relative paths relative to the list's folder.
    #[arg(long)]
    file_list: bool,
    /// How the INPUT folder is organised.
    #[arg(long, value_parser = choice::<Layout>(), default_value = "auto")]
    layout: Layout,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Target shard size: bytes, or with a K, M or G suffix (powers of 1024).
    #[arg(long, default_value = "256M", value_parser = barlow::parse_size)]
    shard_size: u64,
    /// Decode every JPEG fully instead of checking headers and structure.
    #[arg(long)]
    verify: bool,
    /// Reject images declaring more pixels than this (decompression bombs).
    #[arg(long, default_value_t = shardify::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Downsize images whose longer side exceeds N pixels and re-encode them
    /// (cuts decode cost at training time, as FFCV does). Default: keep the
    /// original bytes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    max_side: Option<u32>,
    /// JPEG quality for re-encoded images.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// Delete an existing dataset or unfinished run in OUTPUT first.
    #[arg(long)]
    overwrite: bool,
    /// Print a JSON summary as the last line of output.
    #[arg(long)]
    json: bool,
    /// Cache folder: staging for a remote OUTPUT, the cache of a remote
    /// --check [default: $XDG_CACHE_HOME/barlow, or ~/.cache/barlow].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Seconds a failing request to the store is retried before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    net_deadline: f64,
    /// Testing aid: abort (like kill -9) once N shards are complete.
    #[arg(long, hide = true)]
    abort_after_shards: Option<usize>,
}

/// The progress bar, and the `--abort-after-shards` testing aid: the
/// process aborts (as `kill -9` would stop it) once that many shards are
/// complete, before the next one is written.
struct AbortAfter {
    bar: Bar,
    shards: Option<usize>,
}

impl Progress for AbortAfter {
    fn begin(&self, phase: &str, total: u64, done: u64) {
        self.bar.begin(phase, total, done);
    }
    fn advance(&self, n: u64) {
        self.bar.advance(n);
    }
    fn message(&self, msg: &str) {
        self.bar.message(msg);
    }
    fn saved(&self, _what: &str, count: u64) {
        if self.shards.is_some_and(|n| n as u64 == count) {
            std::process::abort();
        }
    }
    fn finish(&self) {
        self.bar.finish();
    }
}

/// A command-line parser for a library [`Choice`]: its names are the
/// possible values `--help` lists.
fn choice<T: Choice + Clone + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(T::NAMES.iter().map(|(_, n)| *n))
        .try_map(|s: String| T::from_name(&s).ok_or_else(|| format!("unknown value {s}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut remote = RemoteOptions {
        deadline: barlow::data::source::deadline_secs(cli.net_deadline),
        ..RemoteOptions::default()
    };
    if let Some(dir) = &cli.cache_dir {
        remote.cache_dir = dir.clone();
    }
    if let Some(dir) = &cli.check {
        return match Location::from_path(dir) {
            Ok(Location::Local(dir)) => run_check(&dir, cli.decode, threads, cli.json),
            Ok(location) => run_check_remote(&location, &remote, cli.decode, cli.json),
            Err(e) => {
                eprintln!("shardify: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (Some(input), Some(output)) = (cli.input, cli.output) else {
        eprintln!("shardify: INPUT and OUTPUT are required (see --help)");
        return ExitCode::from(2);
    };
    let input = if cli.file_list {
        Input::FileList(input)
    } else {
        Input::Folder {
            path: input,
            layout: cli.layout,
        }
    };
    let opts = Options {
        threads,
        shard_size: cli.shard_size,
        verify: cli.verify,
        max_pixels: cli.max_pixels,
        max_side: cli.max_side,
        quality: cli.quality,
        overwrite: cli.overwrite,
    };
    let progress = AbortAfter {
        bar: Bar::new(),
        shards: cli.abort_after_shards,
    };
    // A remote OUTPUT is staged in a local folder, then uploaded.
    let target = match Location::from_path(&output) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shardify: {e}");
            return ExitCode::FAILURE;
        }
    };
    let output = match &target {
        Location::Local(dir) => dir.clone(),
        remote_target => remote
            .cache_dir
            .join("staging")
            .join(remote_target.to_string().replace("://", "/")),
    };
    // A staged dataset whose upload failed goes up on a rerun.
    if target.is_remote() && !cli.overwrite && output.join("manifest.json").exists() {
        println!("uploading the dataset staged in {}", output.display());
        return upload(&output, &target, &remote);
    }
    let summary = match shardify::shardify(&input, &output, &opts, &progress) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardify: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    if let Some(at) = summary.resumed_at {
        println!("resumed at input {at} of {}", summary.files_seen);
    }
    println!(
        "{} records ({} classes, {} layout) in {} shards, {:.1} MiB, in {:.2}s: {:.0} images/s, {:.1} MB/s",
        summary.records,
        summary.classes,
        summary.layout,
        summary.shards,
        summary.bytes as f64 / (1 << 20) as f64,
        secs,
        summary.files_seen as f64 / secs,
        summary.bytes as f64 / 1e6 / secs
    );
    if summary.transcoded + summary.downsized > 0 {
        println!(
            "re-encoded: {} transcoded from other formats, {} downsized",
            summary.transcoded, summary.downsized
        );
    }
    if summary.ignored > 0 {
        println!(
            "passed over {} files without an image extension ({})",
            summary.ignored,
            shardify::IMAGE_EXTENSIONS.join(", ")
        );
    }
    let rejects = summary.rejects_by_reason();
    if rejects.is_empty() {
        println!("rejected: none");
    } else {
        let counts: Vec<String> = rejects.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "rejected {} files: {}",
            summary.rejected.len(),
            counts.join(", ")
        );
        for r in summary.rejected.iter().take(20) {
            println!("  {}: {} ({})", r.path, r.reason, r.detail);
        }
        if summary.rejected.len() > 20 {
            println!("  ... {} more", summary.rejected.len() - 20);
        }
        println!(
            "all rejected files are listed in {}",
            output.join(shardify::REJECTS_FILE).display()
        );
    }
    if target.is_remote() && upload(&output, &target, &remote) != ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    if cli.json {
        let json = serde_json::json!({
            "records": summary.records,
            "shards": summary.shards,
            "bytes": summary.bytes,
            "files_seen": summary.files_seen,
            "rejected": rejects,
            "transcoded": summary.transcoded,
            "downsized": summary.downsized,
            "resumed_at": summary.resumed_at,
            "seconds": secs,
            "images_per_sec": summary.files_seen as f64 / secs,
            "mb_per_sec": summary.bytes as f64 / 1e6 / secs,
        });
        println!("{json}");
    }
    ExitCode::SUCCESS
}

/// Uploads the staged dataset `staged` to `target`, the manifest last, and
/// removes the staging folder (this tool's own) once the store has it all.
fn upload(staged: &std::path::Path, target: &Location, remote: &RemoteOptions) -> ExitCode {
    match barlow::data::source::upload(staged, target, remote, &Bar::new()) {
        Ok((objects, bytes)) => {
            println!(
                "uploaded {objects} objects, {:.1} MiB, to {target}",
                bytes as f64 / (1 << 20) as f64
            );
            if let Err(e) = std::fs::remove_dir_all(staged) {
                eprintln!(
                    "shardify: warning: the staging folder {} stays: {e}",
                    staged.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "shardify: upload to {target} failed: {e}; the dataset stays in {} (rerun to upload it)",
                staged.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn run_check(dir: &std::path::Path, decode: bool, threads: usize, json: bool) -> ExitCode {
    let started = std::time::Instant::now();
    match shardify::check(dir, decode, threads, &Bar::new()) {
        Ok(report) => print_check(&report, decode, started, json),
        Err(e) => {
            eprintln!("shardify: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check` of a remote dataset: every record fetched through the cache.
fn run_check_remote(
    location: &Location,
    remote: &RemoteOptions,
    decode: bool,
    json: bool,
) -> ExitCode {
    let started = std::time::Instant::now();
    match barlow::data::source::open(location, remote) {
        Ok(ds) => print_check(
            &shardify::check_dataset(&ds, decode, &Bar::new()),
            decode,
            started,
            json,
        ),
        Err(e) => {
            eprintln!("shardify: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_check(
    report: &shardify::CheckReport,
    decode: bool,
    started: std::time::Instant,
    json: bool,
) -> ExitCode {
    println!(
        "checked {} shards, {} records, {:.1} MiB{} in {:.2}s",
        report.shards,
        report.records,
        report.bytes as f64 / (1 << 20) as f64,
        if decode {
            format!(", {} decoded", report.decoded)
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64()
    );
    for p in &report.problems {
        println!("PROBLEM {p}");
    }
    println!(
        "{}",
        if report.ok() {
            "OK: every checksum matches".to_string()
        } else {
            format!("FAILED: {} problems", report.problems.len())
        }
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": report.ok(), "shards": report.shards, "records": report.records, "problems": report.problems.len()})
        );
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
