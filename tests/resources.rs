//! The loader's resources stay bounded over a long run: anonymous memory
//! flat, a fixed number of threads, a fixed number of open files. In a test
//! binary of its own, so that no other test's threads or files are counted.

mod common;

use std::path::Path;
use std::sync::Arc;

use barlow::data::augment::AugmentConfig;
use barlow::data::loader::{Loader, LoaderConfig};
use barlow::data::sampler::{Position, SamplerConfig};
use barlow::data::shard::Dataset;
use barlow::prep::shardify::{self, Input, Layout, Options};
use barlow::progress::Silent;
use common::image_folder;

/// (RssAnon in KiB, threads, open file descriptors) of this process.
fn usage() -> (u64, u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (field("RssAnon:"), field("Threads:"), fds)
}

#[test]
fn memory_threads_and_open_files_stay_flat_over_many_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 2, 16);
    let out = tmp.path().join("shards");
    let input = Input::Folder {
        path: src,
        layout: Layout::ImageFolder,
    };
    shardify::shardify(&input, &out, &Options::default(), &Silent).unwrap();
    let ds = Arc::new(Dataset::open(Path::new(&out)).unwrap());
    let cfg = LoaderConfig {
        sampler: SamplerConfig {
            batch_size: 8,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: 48,
            ..AugmentConfig::default()
        },
        threads: 3,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(ds, cfg, Position::default()).unwrap();
    // 4 batches an epoch: warm up for 5 epochs, then run 100 more.
    for _ in 0..20 {
        loader.next_batch().unwrap();
    }
    let (rss0, threads0, fds0) = usage();
    for _ in 0..400 {
        loader.next_batch().unwrap();
    }
    let (rss1, threads1, fds1) = usage();
    assert_eq!(loader.position().epoch, 105);
    assert_eq!(threads1, threads0, "threads");
    assert_eq!(fds1, fds0, "open files");
    assert!(
        rss1 <= rss0 + 4 * 1024,
        "anonymous memory grew from {rss0} KiB to {rss1} KiB over 100 epochs"
    );
}
