//! Loader behaviour that needs the crate's internal test hooks; the rest of
//! the loader's tests are end to end, in `tests/loader.rs`.

use std::path::Path;

use super::*;
use crate::data::decode::RgbImage;
use crate::data::shard::manifest::{FORMAT_NAME, MANIFEST_FILE, SourceInfo};
use crate::data::shard::{Manifest, ShardWriter, VERSION};
use crate::prep::transcode::encode_jpeg;

/// A small JPEG, different for each `i`.
fn jpeg(i: u32) -> Vec<u8> {
    let img = RgbImage {
        width: 40,
        height: 30,
        pixels: (0..40 * 30 * 3)
            .map(|k| ((k * 7 + i * 13) % 256) as u8)
            .collect(),
    };
    encode_jpeg(&img, 90).unwrap()
}

/// A one-shard dataset in `dir` holding `records` as they are.
fn dataset_of(dir: &Path, records: &[Vec<u8>]) -> Arc<Dataset> {
    let mut w = ShardWriter::create(dir, 0).unwrap();
    for (i, bytes) in records.iter().enumerate() {
        w.append(bytes, i as u32 % 2, 40, 30, 0).unwrap();
    }
    let n = records.len() as u64;
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: VERSION,
        num_records: n,
        classes: vec!["a".into(), "b".into()],
        shards: vec![w.finish().unwrap()],
        source: SourceInfo {
            input: "test".into(),
            layout: "flat".into(),
            files_seen: n,
            transcoded: 0,
            downsized: 0,
            rejected: Default::default(),
            options: serde_json::Value::Null,
            tool: "test".into(),
        },
    };
    manifest.write(&dir.join(MANIFEST_FILE)).unwrap();
    Arc::new(Dataset::open(dir).unwrap())
}

fn config(batch_size: usize, threads: usize) -> LoaderConfig {
    LoaderConfig {
        sampler: SamplerConfig {
            batch_size,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: 24,
            ..AugmentConfig::default()
        },
        threads,
        ..LoaderConfig::default()
    }
}

#[test]
fn a_record_on_which_the_decoder_panics_is_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..8u32)
        .map(|i| {
            if i == 5 {
                crate::data::decode::tests::PANICKING_INPUT.to_vec()
            } else {
                jpeg(i)
            }
        })
        .collect();
    let ds = dataset_of(tmp.path(), &records);
    let mut l = Loader::new(ds, config(8, 2), Position::default()).unwrap();
    for _ in 0..3 {
        let b = l.next_batch().unwrap();
        assert!(
            !b.records().contains(&5),
            "the panicking record was delivered"
        );
    }
    // Once per epoch delivered (one batch an epoch); the workers may have
    // met it again in the up to 3 batches they fill ahead.
    let failures = l.stats().decode_failures;
    assert!((3..=6).contains(&failures), "{failures} decode failures");
}

#[test]
fn a_worker_panic_becomes_an_error_at_the_consumer() {
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..16).map(jpeg).collect();
    let ds = dataset_of(tmp.path(), &records);
    let cfg = LoaderConfig {
        panic_on_record: Some(9),
        ..config(16, 3)
    };
    let mut l = Loader::new(ds, cfg, Position::default()).unwrap();
    match l.next_batch() {
        Err(LoaderError::WorkerPanic {
            record: 9,
            message,
            at,
            ..
        }) => {
            assert!(message.contains("test hook"), "{message}");
            assert!(
                at.contains("shard-00000.bshard") && at.contains("offset"),
                "{at}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("batch delivered past a panic"),
    };
}

#[test]
fn one_view_batches_hold_view_0_of_full_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..12).map(jpeg).collect();
    let ds = dataset_of(tmp.path(), &records);
    let mut full = Loader::new(Arc::clone(&ds), config(4, 2), Position::default()).unwrap();
    let one_cfg = LoaderConfig {
        mode: Mode::OneView,
        ..config(4, 2)
    };
    let mut one = Loader::new(ds, one_cfg, Position::default()).unwrap();
    for _ in 0..4 {
        let a = full.next_batch().unwrap();
        let b = one.next_batch().unwrap();
        assert_eq!(a.records(), b.records());
        assert_eq!(a.view_u8(0), b.view_u8(0));
        assert_ne!(a.view_u8(0), a.view_u8(1), "the two views differ");
    }
}
