//! Loader behaviour that needs the crate's internal test hooks; the rest of
//! the loader's tests are end to end, in `tests/loader.rs`.

use std::path::Path;

use super::*;
use crate::data::decode::RgbImage;
use crate::prep::shardify::{self, Input, Layout, Options};
use crate::prep::transcode::encode_jpeg;
use crate::progress::Silent;

/// `n` small JPEGs in two classes, shardified.
fn small_dataset(dir: &Path, n: u32) -> Arc<Dataset> {
    let src = dir.join("src");
    for i in 0..n {
        let class = src.join(format!("c{}", i % 2));
        std::fs::create_dir_all(&class).unwrap();
        let img = RgbImage {
            width: 40,
            height: 30,
            pixels: (0..40 * 30 * 3)
                .map(|k| ((k * 7 + i * 13) % 256) as u8)
                .collect(),
        };
        std::fs::write(
            class.join(format!("{i:03}.jpg")),
            encode_jpeg(&img, 90).unwrap(),
        )
        .unwrap();
    }
    let out = dir.join("shards");
    let input = Input::Folder {
        path: src,
        layout: Layout::ImageFolder,
    };
    shardify::shardify(&input, &out, &Options::default(), &Silent).unwrap();
    Arc::new(Dataset::open(&out).unwrap())
}

#[test]
fn a_record_on_which_the_decoder_panics_is_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = crate::data::shard::ShardWriter::create(tmp.path(), 0).unwrap();
    for i in 0..8u32 {
        let bytes = if i == 5 {
            crate::data::decode::tests::PANICKING_INPUT.to_vec()
        } else {
            let img = RgbImage {
                width: 40,
                height: 30,
                pixels: (0..40 * 30 * 3)
                    .map(|k| ((k * 7 + i * 13) % 256) as u8)
                    .collect(),
            };
            encode_jpeg(&img, 90).unwrap()
        };
        w.append(&bytes, i % 2, 40, 30, 0).unwrap();
    }
    let info = w.finish().unwrap();
    let manifest = crate::data::shard::Manifest {
        format: crate::data::shard::manifest::FORMAT_NAME.into(),
        version: crate::data::shard::VERSION,
        num_records: 8,
        classes: vec!["a".into(), "b".into()],
        shards: vec![info],
        source: crate::data::shard::manifest::SourceInfo {
            input: "test".into(),
            layout: "flat".into(),
            files_seen: 8,
            transcoded: 0,
            downsized: 0,
            rejected: Default::default(),
            options: serde_json::Value::Null,
            tool: "test".into(),
        },
    };
    manifest
        .write(&tmp.path().join(crate::data::shard::manifest::MANIFEST_FILE))
        .unwrap();
    let ds = Arc::new(Dataset::open(tmp.path()).unwrap());
    let cfg = LoaderConfig {
        sampler: SamplerConfig {
            batch_size: 8,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: 24,
            ..AugmentConfig::default()
        },
        threads: 2,
        ..LoaderConfig::default()
    };
    let mut l = Loader::new(ds, cfg, Position::default()).unwrap();
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
    let ds = small_dataset(tmp.path(), 16);
    let mut cfg = LoaderConfig {
        sampler: SamplerConfig {
            batch_size: 16,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: 24,
            ..AugmentConfig::default()
        },
        threads: 3,
        ..LoaderConfig::default()
    };
    cfg.panic_on_record = Some(9);
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
