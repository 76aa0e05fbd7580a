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
