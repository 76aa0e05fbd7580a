//! `shardify --check`: re-reads a dataset folder and verifies every checksum,
//! reporting each problem instead of stopping at the first.

use std::path::Path;

use crate::data::decode;
use crate::data::shard::manifest::MANIFEST_FILE;
use crate::data::shard::{Dataset, Manifest, NO_LABEL, RecordMeta, Shard, ShardError};
use crate::progress::Progress;

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub shards: usize,
    pub records: u64,
    /// Bytes of the shard files read.
    pub bytes: u64,
    /// Records whose full decode was checked (`decode`).
    pub decoded: u64,
    /// One line per problem; empty when the dataset is sound.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the manifest, every shard's header and index, and every record's
/// checksum and label; with `decode`, also decodes every record and compares
/// its size with the index. Shards are checked on `threads` threads.
/// Returns `Err` only when the manifest itself cannot be read.
pub fn check(
    dir: &Path,
    decode: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<CheckReport, ShardError> {
    let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
    progress.begin("check", manifest.num_records, 0);
    let mut report = CheckReport {
        shards: manifest.shards.len(),
        ..CheckReport::default()
    };
    let merged = crate::pool::map_ordered(
        threads,
        0..manifest.shards.len(),
        |k| {
            let mut local = CheckReport::default();
            check_shard(dir, &manifest, k, decode, progress, &mut local);
            local
        },
        |_, local| {
            report.records += local.records;
            report.bytes += local.bytes;
            report.decoded += local.decoded;
            report.problems.extend(local.problems);
            Ok::<(), std::convert::Infallible>(())
        },
    );
    let Ok(()) = merged;
    progress.finish();
    if report.records != manifest.num_records {
        report.problems.push(format!(
            "{}: num_records is {}, the shards hold {}",
            dir.join(MANIFEST_FILE).display(),
            manifest.num_records,
            report.records
        ));
    }
    report.problems.sort();
    Ok(report)
}

fn check_shard(
    dir: &Path,
    manifest: &Manifest,
    k: usize,
    decode: bool,
    progress: &dyn Progress,
    out: &mut CheckReport,
) {
    let info = &manifest.shards[k];
    let path = dir.join(&info.file);
    let shard = match Shard::open(&path) {
        Ok(s) => s,
        Err(e) => {
            out.problems.push(e.to_string());
            return;
        }
    };
    out.bytes += shard.file_len();
    out.records += shard.len() as u64;
    let mut mismatch = |what: String| out.problems.push(format!("{}: {what}", path.display()));
    if shard.len() as u64 != info.num_records {
        mismatch(format!(
            "holds {} records, the manifest says {}",
            shard.len(),
            info.num_records
        ));
    }
    if shard.file_len() != info.bytes {
        mismatch(format!(
            "is {} bytes, the manifest says {}",
            shard.file_len(),
            info.bytes
        ));
    }
    if shard.index_crc32() != info.index_crc32 {
        mismatch(format!(
            "index checksum {:#010x} differs from the manifest's {:#010x}",
            shard.index_crc32(),
            info.index_crc32
        ));
    }
    for i in 0..shard.len() {
        progress.advance(1);
        let record = match shard.verify_record(i) {
            Ok(r) => r,
            Err(e) => {
                out.problems.push(e.to_string());
                continue;
            }
        };
        check_record(&path, manifest, i, &record.meta, record.bytes, decode, out);
    }
}

/// The checks of one record beyond its checksum: its label is one of the
/// classes, and with `decode` it decodes to the size its index entry says.
fn check_record(
    path: &Path,
    manifest: &Manifest,
    i: usize,
    meta: &RecordMeta,
    bytes: &[u8],
    decode: bool,
    out: &mut CheckReport,
) {
    let label = meta.label;
    let label_ok = if manifest.classes.is_empty() {
        label == NO_LABEL
    } else {
        (label as usize) < manifest.classes.len()
    };
    if !label_ok {
        out.problems.push(format!(
            "{}: record {i} at offset {}: label {label} is not one of the {} classes",
            path.display(),
            meta.offset,
            manifest.classes.len()
        ));
    }
    if decode {
        out.decoded += 1;
        match decode::decode_jpeg(bytes, u64::MAX) {
            Ok(img) if (img.width, img.height) == (meta.width, meta.height) => {}
            Ok(img) => out.problems.push(format!(
                "{}: record {i} at offset {}: decodes to {}x{}, the index says {}x{}",
                path.display(),
                meta.offset,
                img.width,
                img.height,
                meta.width,
                meta.height
            )),
            Err(e) => out.problems.push(format!(
                "{}: record {i} at offset {}: {e}",
                path.display(),
                meta.offset
            )),
        }
    }
}

/// [`check`] for an open remote dataset (`shardify --check s3://...`): its
/// manifest, headers and indexes were checked when it opened; every record
/// is fetched (through the cache) and checked as a local one is.
pub fn check_dataset(ds: &Dataset, decode: bool, progress: &dyn Progress) -> CheckReport {
    let manifest = ds.manifest();
    progress.begin("check", ds.len(), 0);
    let mut report = CheckReport {
        shards: manifest.shards.len(),
        bytes: ds.bytes(),
        ..CheckReport::default()
    };
    let mut bytes = Vec::new();
    for index in 0..ds.len() {
        progress.advance(1);
        report.records += 1;
        let at = ds
            .locate(index)
            .map(|(k, local)| (ds.shards()[k].path(), local));
        match (ds.read_verified_into(index, &mut bytes), at) {
            (Ok(meta), Ok((path, local))) => {
                check_record(path, manifest, local, &meta, &bytes, decode, &mut report)
            }
            (Err(e), _) | (_, Err(e)) => report.problems.push(e.to_string()),
        }
    }
    progress.finish();
    report.problems.sort();
    report
}
