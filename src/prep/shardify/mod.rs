//! Turning a user's images into a dataset folder of shards.
//!
//! Guarantees:
//! - Record order is the input order ([`input`]); shard boundaries follow
//!   from the record sizes alone, so two runs over the same input and options
//!   write byte-identical shards, whatever `threads` is.
//! - A bad file never stops the run: it is rejected with its path and reason
//!   ([`admit`]) and listed in `rejects.tsv`.
//! - Shards are written under temporary names and renamed when complete; the
//!   manifest is written last. An interrupted run (even `kill -9`) never
//!   leaves a manifest pointing at a partial shard, and rerunning resumes
//!   from the last complete shard ([`journal`]); a rerun never duplicates
//!   records. A rerun over a complete dataset, or over an unfinished run with
//!   other inputs or options, is refused unless `overwrite` is set.

pub mod admit;
mod check;
pub mod input;
pub mod journal;

pub use check::{CheckReport, check, check_dataset};
pub use input::{IMAGE_EXTENSIONS, Input, InputItem, Inputs, Layout, discover};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::data::shard::manifest::{FORMAT_NAME, MANIFEST_FILE, SourceInfo};
use crate::data::shard::{Manifest, ShardError, ShardInfo, ShardWriter, VERSION, shard_file_name};
use crate::error::IoError;
use crate::progress::Progress;
use admit::{Admitted, Reject, admit_file};
use journal::{Fingerprint, JOURNAL_FILE, Journal, RejectedFile};

/// Name of the list of rejected files written beside the manifest.
pub const REJECTS_FILE: &str = "rejects.tsv";

pub use crate::data::decode::DEFAULT_MAX_PIXELS;

/// Options that shape a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    /// Worker threads reading and checking files.
    #[serde(skip)]
    pub threads: usize,
    /// A shard is closed before its record data would exceed this many bytes
    /// (a single larger record gets a shard of its own).
    pub shard_size: u64,
    /// Decode every JPEG fully instead of checking its headers and structure.
    pub verify: bool,
    /// Images declaring more pixels than this are rejected unread.
    pub max_pixels: u64,
    /// Downsize images whose longer side exceeds this, and re-encode them.
    pub max_side: Option<u32>,
    /// JPEG quality for re-encoded images (transcoded or downsized).
    pub quality: u8,
    /// Remove an existing dataset or unfinished run in the output first.
    #[serde(skip)]
    pub overwrite: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shard_size: 256 << 20,
            verify: false,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_side: None,
            quality: 90,
            overwrite: false,
        }
    }
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ShardifyError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Refused(String),
    #[error("cannot record the options: {0}")]
    Options(String),
    #[error("no image was kept out of {seen} files ({rejected} rejected); nothing written")]
    NoImages { seen: u64, rejected: u64 },
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub output: PathBuf,
    pub layout: &'static str,
    pub classes: usize,
    pub files_seen: u64,
    /// Files passed over for their extension.
    pub ignored: u64,
    pub records: u64,
    /// Bytes of all shard files.
    pub bytes: u64,
    pub shards: usize,
    pub transcoded: u64,
    pub downsized: u64,
    pub rejected: Vec<RejectedFile>,
    /// Input position the run resumed from, if it resumed.
    pub resumed_at: Option<usize>,
    pub elapsed: Duration,
}

impl Summary {
    /// Rejected files counted by reason.
    pub fn rejects_by_reason(&self) -> BTreeMap<String, u64> {
        count_reasons(&self.rejected)
    }
}

fn count_reasons(rejected: &[RejectedFile]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in rejected {
        *m.entry(r.reason.clone()).or_insert(0) += 1;
    }
    m
}

/// Makes the dataset folder `output` from `input`. See the module docs.
pub fn shardify(
    input: &Input,
    output: &Path,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Summary, ShardifyError> {
    let started = Instant::now();
    let inputs = discover(input)?;
    fs::create_dir_all(output).map_err(IoError::at(output))?;
    let fingerprint = fingerprint(&inputs, opts)?;
    let journal_path = output.join(JOURNAL_FILE);
    let mut journal = prepare_output(output, &journal_path, &fingerprint, opts)?;
    let resumed_at = (journal.next_input > 0).then_some(journal.next_input);

    let items = &inputs.items;
    let start = journal.next_input;
    progress.begin("shardify", items.len() as u64, journal.next_input as u64);
    let mut sink = Sink {
        output,
        journal_path: &journal_path,
        journal: &mut journal,
        writer: None,
        shard_size: opts.shard_size,
        items,
        progress,
    };
    run_ordered(items, start, opts, progress, |i, outcome| {
        sink.take(i, outcome)
    })?;
    sink.close_shard(items.len())?;
    progress.finish();

    let rejected = journal.rejected.clone();
    let records: u64 = journal.shards.iter().map(|s| s.num_records).sum();
    if records == 0 {
        return Err(ShardifyError::NoImages {
            seen: items.len() as u64,
            rejected: rejected.len() as u64,
        });
    }
    let mut tsv = String::from("path\treason\tdetail\n");
    for r in &rejected {
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        tsv.push_str(&format!(
            "{}\t{}\t{}\n",
            clean(&r.path),
            r.reason,
            clean(&r.detail)
        ));
    }
    crate::fs::write_atomically(&output.join(REJECTS_FILE), tsv.as_bytes())?;
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: VERSION,
        num_records: records,
        classes: inputs.classes.clone(),
        shards: journal.shards.clone(),
        source: SourceInfo {
            input: input.path().display().to_string(),
            layout: inputs.layout.into(),
            files_seen: items.len() as u64,
            transcoded: journal.transcoded,
            downsized: journal.downsized,
            rejected: count_reasons(&rejected),
            options: options_json(opts)?,
            tool: concat!("shardify ", env!("CARGO_PKG_VERSION")).into(),
        },
    };
    manifest.write(&output.join(MANIFEST_FILE))?;
    fs::remove_file(&journal_path).map_err(IoError::at(&journal_path))?;
    crate::fs::sync(output)?;
    Ok(Summary {
        output: output.to_path_buf(),
        layout: inputs.layout,
        classes: inputs.classes.len(),
        files_seen: items.len() as u64,
        ignored: inputs.ignored,
        records,
        bytes: journal.shards.iter().map(|s| s.bytes).sum(),
        shards: journal.shards.len(),
        transcoded: journal.transcoded,
        downsized: journal.downsized,
        rejected,
        resumed_at,
        elapsed: started.elapsed(),
    })
}

fn fingerprint(inputs: &Inputs, opts: &Options) -> Result<String, ShardifyError> {
    let mut f = Fingerprint::default();
    f.update(env!("CARGO_PKG_VERSION").as_bytes());
    let json = serde_json::to_string(opts).map_err(|e| ShardifyError::Options(e.to_string()))?;
    f.update(json.as_bytes());
    f.update(inputs.layout.as_bytes());
    for c in &inputs.classes {
        f.update(c.as_bytes());
    }
    for it in &inputs.items {
        f.update(it.path.as_os_str().as_encoded_bytes());
        f.update(&it.label.to_le_bytes());
        f.update(&it.size.to_le_bytes());
    }
    Ok(f.hex())
}

/// The options as the manifest records them.
fn options_json(opts: &Options) -> Result<serde_json::Value, ShardifyError> {
    serde_json::to_value(opts).map_err(|e| ShardifyError::Options(e.to_string()))
}

/// Files in `dir` that a run of ours may have written.
fn our_files(dir: &Path) -> Result<Vec<PathBuf>, ShardifyError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(IoError::at(dir))? {
        let entry = entry.map_err(IoError::at(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Our files, and their temporaries `.{name}.tmp` (see `ShardWriter`
        // and `write_atomically`); anything else in the folder is left alone.
        let base = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .unwrap_or(&name);
        let ours = (base.starts_with("shard-") && base.ends_with(".bshard"))
            || [MANIFEST_FILE, REJECTS_FILE, JOURNAL_FILE].contains(&base);
        if ours {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Decides between a fresh start, a resume and a refusal, and leaves the
/// output folder holding only what the returned journal describes.
fn prepare_output(
    output: &Path,
    journal_path: &Path,
    fingerprint: &str,
    opts: &Options,
) -> Result<Journal, ShardifyError> {
    let fresh = Journal {
        fingerprint: fingerprint.to_string(),
        shards: Vec::new(),
        next_input: 0,
        transcoded: 0,
        downsized: 0,
        rejected: Vec::new(),
    };
    if opts.overwrite {
        for p in our_files(output)? {
            fs::remove_file(&p).map_err(IoError::at(&p))?;
        }
    }
    let manifest = output.join(MANIFEST_FILE);
    if manifest.exists() {
        return Err(ShardifyError::Refused(format!(
            "{} already holds a complete dataset ({}); use --overwrite to rebuild it, or `shardify --check {}` to verify it",
            output.display(),
            manifest.display(),
            output.display()
        )));
    }
    let journal = if journal_path.exists() {
        let j = Journal::read(journal_path)?;
        if j.fingerprint != fingerprint {
            return Err(ShardifyError::Refused(format!(
                "{} holds an unfinished run over different input files or options; rerun with the same ones to resume, or use --overwrite to start over",
                output.display()
            )));
        }
        j
    } else {
        if our_files(output)?.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("shard-"))
        }) {
            return Err(ShardifyError::Refused(format!(
                "{} holds shard files but no manifest or journal; use --overwrite to replace them",
                output.display()
            )));
        }
        fresh
    };
    // Everything not listed as complete is a leftover of the interrupted run.
    let complete: Vec<&str> = journal.shards.iter().map(|s| s.file.as_str()).collect();
    for p in our_files(output)? {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name == JOURNAL_FILE || complete.contains(&name.as_str()) {
            continue;
        }
        fs::remove_file(&p).map_err(IoError::at(&p))?;
    }
    for s in &journal.shards {
        let p = output.join(&s.file);
        let len = match fs::metadata(&p) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(IoError::at(&p)(e).into()),
        };
        if len != s.bytes {
            return Err(ShardifyError::Refused(format!(
                "{}: the journal lists this complete shard with {} bytes, found {len}; use --overwrite to start over",
                p.display(),
                s.bytes
            )));
        }
    }
    journal.write(journal_path)?;
    Ok(journal)
}

/// Where decided inputs go, in input order: into the current shard, or onto
/// the reject list.
struct Sink<'a> {
    output: &'a Path,
    journal_path: &'a Path,
    journal: &'a mut Journal,
    writer: Option<ShardWriter>,
    shard_size: u64,
    items: &'a [InputItem],
    progress: &'a dyn Progress,
}

impl Sink<'_> {
    fn take(&mut self, i: usize, outcome: Result<Admitted, Reject>) -> Result<(), ShardifyError> {
        match outcome {
            Err(r) => self.journal.rejected.push(RejectedFile {
                path: self.items[i].path.display().to_string(),
                reason: r.reason.into(),
                detail: r.detail,
            }),
            Ok(a) => {
                let full = self.writer.as_ref().is_some_and(|w| {
                    w.num_records() > 0 && w.data_bytes() + a.bytes.len() as u64 > self.shard_size
                });
                if full {
                    self.close_shard(i)?;
                }
                if self.writer.is_none() {
                    self.writer =
                        Some(ShardWriter::create(self.output, self.journal.shards.len())?);
                }
                if let Some(w) = self.writer.as_mut() {
                    w.append(&a.bytes, self.items[i].label, a.width, a.height, a.flags)?;
                }
                if a.flags & crate::data::shard::FLAG_TRANSCODED != 0 {
                    self.journal.transcoded += 1;
                }
                if a.flags & crate::data::shard::FLAG_DOWNSIZED != 0 {
                    self.journal.downsized += 1;
                }
            }
        }
        Ok(())
    }

    /// Completes the current shard (if any); inputs before `next_input` are
    /// then all accounted for.
    fn close_shard(&mut self, next_input: usize) -> Result<(), ShardifyError> {
        if let Some(w) = self.writer.take() {
            let info: ShardInfo = w.finish()?;
            debug_assert_eq!(info.file, shard_file_name(self.journal.shards.len()));
            self.journal.shards.push(info);
        }
        self.journal.next_input = next_input;
        self.journal.write(self.journal_path)?;
        self.progress
            .saved("shards complete", self.journal.shards.len() as u64);
        Ok(())
    }
}

/// Decides `items[start..]` on `opts.threads` workers and hands each outcome
/// to `take` in input order (see [`crate::pool`]).
fn run_ordered(
    items: &[InputItem],
    start: usize,
    opts: &Options,
    progress: &dyn Progress,
    mut take: impl FnMut(usize, Result<Admitted, Reject>) -> Result<(), ShardifyError>,
) -> Result<(), ShardifyError> {
    crate::pool::map_ordered(
        opts.threads,
        start..items.len(),
        |i| admit_file(&items[i].path, opts),
        |i, outcome| {
            take(i, outcome)?;
            progress.advance(1);
            Ok(())
        },
    )
}
