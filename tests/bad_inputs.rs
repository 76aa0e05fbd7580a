//! The bad-input corpus: each kind of damaged input and its documented
//! behaviour (`docs/reliability.md`). Records the loader meets are skipped
//! and counted (replaced by another record, chosen deterministically);
//! damaged datasets are errors naming the file and offset. Nothing panics,
//! hangs or allocates without bound.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use barlow::data::augment::AugmentConfig;
use barlow::data::loader::{Loader, LoaderConfig};
use barlow::data::sampler::{Position, SamplerConfig};
use barlow::data::shard::manifest::MANIFEST_FILE;
use barlow::data::shard::{Dataset, ShardError};
use barlow::prep::shardify::{self, Input, Options};
use barlow::progress::Silent;
use common::*;

fn loader(ds: Dataset, batch: usize) -> Loader {
    let cfg = LoaderConfig {
        sampler: SamplerConfig {
            batch_size: batch,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: 24,
            ..AugmentConfig::default()
        },
        threads: 2,
        max_pixels: 1 << 20,
        ..LoaderConfig::default()
    };
    Loader::new(Arc::new(ds), cfg, Position::default()).unwrap()
}

/// shardify over a flat folder of images, default options.
fn shardify_flat(src: &Path, out: &Path) -> Result<shardify::Summary, shardify::ShardifyError> {
    let input = Input::Folder {
        path: src.to_path_buf(),
        layout: shardify::Layout::Flat,
    };
    shardify::shardify(&input, out, &Options::default(), &Silent)
}

/// Runs two epochs over a dataset of `bad` records plus good ones: every
/// batch is delivered and full, and what failed to decode was counted.
fn loader_survives(dir: &Path, bad: Vec<Vec<u8>>) -> u64 {
    let n_bad = bad.len();
    let mut records = bad;
    records.extend((0..n_bad as u32).map(|i| jpeg(40, 30, i)));
    let n = records.len();
    let mut l = loader(dataset_of(dir, &records), 4);
    for _ in 0..2 * (n / 4) {
        let b = l.next_batch().expect("a batch despite bad records");
        assert_eq!(b.len(), 4);
    }
    let failures = l.stats().decode_failures;
    assert!(failures > 0, "no bad record was noticed");
    failures
}

#[test]
fn truncated_jpegs_are_skipped_and_counted_by_the_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let full = jpeg(40, 30, 9);
    // Cut everywhere from inside the headers to just before the end marker.
    let cuts: Vec<Vec<u8>> = (2..full.len() - 2)
        .step_by(full.len() / 40)
        .map(|cut| full[..cut].to_vec())
        .collect();
    loader_survives(tmp.path(), cuts);
}

#[test]
fn flipped_bytes_in_headers_and_entropy_data_never_stop_the_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let good = jpeg(40, 30, 4);
    let flipped: Vec<Vec<u8>> = (0..good.len())
        .step_by(7)
        .map(|at| {
            let mut b = good.clone();
            b[at] ^= 0x5A;
            b
        })
        .collect();
    // Some flips (in the entropy data) still decode to a picture; the header
    // flips do not. Either way the stream goes on.
    loader_survives(tmp.path(), flipped);
}

#[test]
fn huge_declared_dimensions_are_refused_from_the_header() {
    let tmp = tempfile::tempdir().unwrap();
    // 60000 x 60000 declared: 3.6 gigapixels, 14 GB of RGBx if allocated.
    let failures = loader_survives(tmp.path(), vec![jpeg_claiming(60_000); 4]);
    assert!(failures >= 4);
    // shardify refuses them too, before decoding anything.
    let src = tmp.path().join("src");
    write(&src.join("huge.jpg"), &jpeg_claiming(60_000));
    write(&src.join("fine.jpg"), &jpeg(40, 30, 1));
    let s = shardify_flat(&src, &tmp.path().join("out")).unwrap();
    assert_eq!(s.records, 1);
    assert_eq!(s.rejected.len(), 1);
    assert_eq!(s.rejected[0].reason, "too-large");
}

#[test]
fn zero_length_and_non_image_records_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = vec![
        Vec::new(),
        b"not an image at all".to_vec(),
        vec![0xFF, 0xD8],
        vec![0xFF; 300],
    ];
    assert!(loader_survives(tmp.path(), bad) >= 4);
}

fn good_dataset(dir: &Path) {
    let records: Vec<Vec<u8>> = (0..6).map(|i| jpeg(40, 30, i)).collect();
    dataset_of(dir, &records);
}

#[test]
fn a_manifest_of_another_version_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    good_dataset(tmp.path());
    let path = tmp.path().join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let version = format!("\"version\": {}", barlow::data::shard::VERSION);
    assert!(text.contains(&version), "{text}");
    fs::write(&path, text.replace(&version, "\"version\": 99")).unwrap();
    let err = Dataset::open(tmp.path()).unwrap_err();
    assert!(matches!(err, ShardError::ManifestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[test]
fn a_manifest_pointing_at_a_missing_shard_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    good_dataset(tmp.path());
    fs::remove_file(tmp.path().join("shard-00000.bshard")).unwrap();
    let err = Dataset::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("shard-00000.bshard"), "{err}");
}

#[test]
fn a_shard_shorter_than_its_index_says_is_refused_before_any_read() {
    let tmp = tempfile::tempdir().unwrap();
    good_dataset(tmp.path());
    let shard = tmp.path().join("shard-00000.bshard");
    let bytes = fs::read(&shard).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 70, 10] {
        fs::write(&shard, &bytes[..cut]).unwrap();
        let err = Dataset::open(tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("shard-00000.bshard"), "cut {cut}: {msg}");
    }
}

#[test]
fn unwritable_outputs_are_errors_naming_the_path() {
    // A folder below a regular file cannot be created, whoever runs this
    // (permission bits do not stop root).
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("a-file");
    fs::write(&blocker, b"x").unwrap();
    let src = tmp.path().join("src");
    write(&src.join("one.jpg"), &jpeg(40, 30, 1));
    let err = shardify_flat(&src, &blocker.join("shards")).unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
    let err = barlow::fs::write_atomically(&blocker.join("log.jsonl"), b"{}").unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
}

#[test]
fn a_shard_deleted_under_a_running_loader_is_served_from_its_map() {
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..8).map(|i| jpeg(40, 30, i)).collect();
    let mut l = loader(dataset_of(tmp.path(), &records), 4);
    l.next_batch().unwrap();
    // Unlinking a mapped file keeps its pages until the map goes: the run
    // goes on with the data it opened.
    fs::remove_file(tmp.path().join("shard-00000.bshard")).unwrap();
    for _ in 0..6 {
        assert_eq!(l.next_batch().unwrap().len(), 4);
    }
    assert_eq!(l.stats().decode_failures, 0);
    drop(l);
    // A new run is refused, naming the missing shard.
    let err = Dataset::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("shard-00000.bshard"), "{err}");
}
