//! The two-view loader end to end, on small shardified datasets.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use barlow::data::augment::AugmentConfig;
use barlow::data::loader::PixelFormat;
use barlow::data::loader::{
    DamagedRecord, Loader, LoaderConfig, LoaderError, MaxDamaged, Mode, OnDamaged, ReadPath,
};
use barlow::data::sampler::{Position, SamplerConfig};

use barlow::data::shard::Dataset;
use barlow::prep::shardify::{self, Input, Layout, Options};
use barlow::progress::Silent;
use common::*;

fn dataset(dir: &Path, classes: usize, per_class: usize) -> Arc<Dataset> {
    let src = dir.join("src");
    image_folder(&src, classes, per_class);
    let out = dir.join("shards");
    let opts = Options {
        threads: 2,
        shard_size: 20 << 10,
        ..Options::default()
    };
    let input = Input::Folder {
        path: src,
        layout: Layout::Auto,
    };
    shardify::shardify(&input, &out, &opts, &Silent).unwrap();
    Arc::new(Dataset::open(&out).unwrap())
}

fn config(threads: usize, batch: usize) -> LoaderConfig {
    LoaderConfig {
        sampler: SamplerConfig {
            seed: 11,
            batch_size: batch,
            ..SamplerConfig::default()
        },
        augment: AugmentConfig {
            size: 32,
            ..AugmentConfig::default()
        },
        threads,
        prefetch: 2,
        ..LoaderConfig::default()
    }
}

/// Everything a batch holds, copied out.
type Taken = (
    Position,
    Vec<u8>,
    Vec<u8>,
    Vec<f32>,
    Vec<f32>,
    Vec<u32>,
    Vec<u64>,
);

fn take(loader: &mut Loader, n: usize) -> Vec<Taken> {
    (0..n)
        .map(|_| {
            let b = loader.next_batch().unwrap();
            (
                b.position(),
                b.view_u8(0).to_vec(),
                b.view_u8(1).to_vec(),
                b.view_f32(0).to_vec(),
                b.view_f32(1).to_vec(),
                b.labels().to_vec(),
                b.records().to_vec(),
            )
        })
        .collect()
}

#[test]
fn batches_have_two_views_of_the_right_shape_and_real_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path(), 3, 12);
    let mut loader = Loader::new(Arc::clone(&ds), config(2, 8), Position::default()).unwrap();
    assert_eq!(loader.sampler().batches_per_epoch(), 4);
    let b = loader.next_batch().unwrap();
    assert_eq!(b.shape(), [8, 3, 32, 32]);
    assert_eq!(b.view_u8(0).len(), 8 * 3 * 32 * 32);
    assert!(b.view_f32(0).is_empty(), "u8 format fills no f32 buffer");
    for (&label, &record) in b.labels().iter().zip(b.records()) {
        assert_eq!(label, ds.record(record).unwrap().meta.label);
    }
    // The two views of a sample differ (independent crops and colour ops).
    let n = 3 * 32 * 32;
    let differ = (0..8)
        .filter(|&j| b.view_u8(0)[j * n..(j + 1) * n] != b.view_u8(1)[j * n..(j + 1) * n])
        .count();
    assert!(
        differ >= 7,
        "only {differ} of 8 samples have differing views"
    );
    let spread =
        b.view_u8(0).iter().copied().max().unwrap() - b.view_u8(0).iter().copied().min().unwrap();
    assert!(spread > 100, "views look blank");
}

#[test]
fn same_seed_gives_byte_identical_batches_with_1_or_3_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path(), 2, 15);
    for format in [PixelFormat::U8, PixelFormat::F32] {
        let run = |threads| {
            let mut cfg = config(threads, 6);
            cfg.format = format;
            let mut l = Loader::new(Arc::clone(&ds), cfg, Position::default()).unwrap();
            take(&mut l, 12) // 5 batches an epoch: crosses two epoch boundaries
        };
        let (a, b) = (run(1), run(3));
        assert!(a == b, "{format:?}: batches differ between 1 and 3 threads");
        assert_eq!(a[5].0, Position { epoch: 1, batch: 0 });
        assert_ne!(a[0].6, a[5].6, "epochs are shuffled differently");
    }
    // A different seed gives different batches.
    let mut other = config(2, 6);
    other.sampler.seed = 12;
    let mut l = Loader::new(Arc::clone(&ds), other, Position::default()).unwrap();
    let mut l0 = Loader::new(Arc::clone(&ds), config(2, 6), Position::default()).unwrap();
    assert_ne!(take(&mut l, 1), take(&mut l0, 1));
}

#[test]
fn resuming_from_a_saved_position_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path(), 2, 10);
    let mut full = Loader::new(Arc::clone(&ds), config(2, 4), Position::default()).unwrap();
    let all = take(&mut full, 9);
    let mut first = Loader::new(Arc::clone(&ds), config(3, 4), Position::default()).unwrap();
    let _ = take(&mut first, 4);
    let saved = serde_json::to_string(&first.position()).unwrap();
    drop(first);
    let pos: Position = serde_json::from_str(&saved).unwrap();
    assert_eq!(pos, Position { epoch: 0, batch: 4 });
    let mut resumed = Loader::new(Arc::clone(&ds), config(1, 4), pos).unwrap();
    assert!(take(&mut resumed, 5) == all[4..], "resumed batches differ");
}

#[test]
fn ranks_see_disjoint_records_and_the_same_number_of_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path(), 3, 11); // 33 records over 2 ranks
    let mut seen = HashSet::new();
    for rank in 0..2 {
        let mut cfg = config(2, 4);
        cfg.sampler.rank = rank;
        cfg.sampler.world_size = 2;
        cfg.mode = Mode::Decode;
        let mut l = Loader::new(Arc::clone(&ds), cfg, Position::default()).unwrap();
        assert_eq!(l.sampler().batches_per_epoch(), 4); // 16 records each
        for _ in 0..4 {
            let b = l.next_batch().unwrap();
            for r in b.records() {
                assert!(seen.insert(*r), "record {r} on both ranks");
            }
        }
    }
    assert_eq!(seen.len(), 32);
}

/// A dataset whose records 3 and 7 are not JPEGs, written without shardify.
fn dataset_with_bad_records(dir: &Path) -> Arc<Dataset> {
    let records: Vec<Vec<u8>> = (0..12u32)
        .map(|i| {
            if i == 3 || i == 7 {
                b"definitely not a jpeg".to_vec()
            } else {
                jpeg(40, 30, i)
            }
        })
        .collect();
    Arc::new(dataset_of(dir, &records))
}

#[test]
fn undecodable_records_are_replaced_deterministically_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset_with_bad_records(tmp.path());
    let run = |threads| {
        let mut l = Loader::new(Arc::clone(&ds), config(threads, 4), Position::default()).unwrap();
        let batches = take(&mut l, 6); // two epochs: every record met twice
        (batches, l.stats().decode_failures)
    };
    let (a, failures) = run(1);
    let (b, _) = run(3);
    assert!(a == b, "replacements depend on threads");
    assert!(failures >= 4, "{failures} failures counted");
    for (_, _, _, _, _, _, records) in &a {
        assert!(
            !records.contains(&3) && !records.contains(&7),
            "a bad record was delivered"
        );
    }
}

#[test]
fn shard_damage_at_run_time_is_an_error_naming_shard_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    let ds_dir = tmp.path().join("ds");
    fs::create_dir_all(&ds_dir).unwrap();
    drop(dataset_with_bad_records(&ds_dir));
    // Flip a byte inside record 5's data: the index stays valid.
    let shard = ds_dir.join("shard-00000.bshard");
    let ds = Dataset::open(&ds_dir).unwrap();
    let offset = ds.record(5).unwrap().meta.offset as usize;
    drop(ds);
    let mut bytes = fs::read(&shard).unwrap();
    bytes[offset + 20] ^= 0xFF;
    fs::write(&shard, &bytes).unwrap();
    let ds = Arc::new(Dataset::open(&ds_dir).unwrap());
    let cfg = LoaderConfig {
        on_damaged: OnDamaged::Stop,
        ..config(2, 12)
    };
    let mut l = Loader::new(ds, cfg, Position::default()).unwrap();
    let err = match l.next_batch() {
        Err(e) => e,
        Ok(_) => panic!("damaged record delivered"),
    };
    let msg = err.to_string();
    assert!(matches!(err, LoaderError::Shard(_)), "{msg}");
    assert!(
        msg.contains("shard-00000.bshard") && msg.contains("record 5"),
        "{msg}"
    );
    // The error sticks: no hang, no garbage afterwards.
    assert!(l.next_batch().is_err());
}

/// A one-shard dataset of 40 JPEGs with a byte flipped in each record of
/// `damaged` (the header and the index stay valid); the shard's path.
fn dataset_with_damage(dir: &Path, damaged: &[u64]) -> (Arc<Dataset>, std::path::PathBuf) {
    let records: Vec<Vec<u8>> = (0..40u32).map(|i| jpeg(40, 30, i)).collect();
    let ds = dataset_of(dir, &records);
    let shard = ds.shards()[0].path().to_path_buf();
    let offsets: Vec<u64> = damaged
        .iter()
        .map(|&r| ds.record(r).unwrap().meta.offset)
        .collect();
    drop(ds);
    let mut bytes = fs::read(&shard).unwrap();
    for o in offsets {
        bytes[o as usize + 20] ^= 0x10;
    }
    fs::write(&shard, &bytes).unwrap();
    (Arc::new(Dataset::open(dir).unwrap()), shard)
}

#[test]
fn damaged_records_are_skipped_deterministically_counted_and_named() {
    let many: Vec<u64> = (0..40).step_by(4).collect();
    for damaged in [vec![5], vec![1, 17, 33], many] {
        let tmp = tempfile::tempdir().unwrap();
        let (ds, shard) = dataset_with_damage(tmp.path(), &damaged);
        let run = |threads| {
            let cfg = LoaderConfig {
                max_damaged: MaxDamaged::Fraction(0.25),
                ..config(threads, 8)
            };
            let mut l = Loader::new(Arc::clone(&ds), cfg, Position::default()).unwrap();
            let batches = take(&mut l, 10); // two epochs: every record met twice
            let mut met = l.take_damaged();
            met.sort_by_key(|m| m.record);
            (batches, l.stats().damaged_records, met)
        };
        let what = format!("{} damaged", damaged.len());
        let (a, count, met) = run(1);
        let (b, _, _) = run(3);
        let (again, _, _) = run(1);
        assert!(a == b, "{what}: replacements depend on threads");
        assert!(a == again, "{what}: a rerun gives other batches");
        for (_, _, _, _, _, _, records) in &a {
            assert!(
                records.iter().all(|r| !damaged.contains(r)),
                "{what}: a damaged record was delivered"
            );
        }
        // Met once an epoch each, and again whenever a replacement drew one.
        // (The workers fill batches ahead: the counts may include a third
        // epoch's first meetings, taken before the count was read.)
        assert!(count >= 2 * damaged.len() as u64, "{what}: {count} counted");
        assert!(met.len() as u64 <= count, "{what}: {} reported", met.len());
        assert!(
            met.len() >= 2 * damaged.len(),
            "{what}: {} reported",
            met.len()
        );
        let distinct: std::collections::BTreeSet<u64> = met.iter().map(|m| m.record).collect();
        assert_eq!(distinct.into_iter().collect::<Vec<_>>(), damaged, "{what}");
        let first = Dataset::open(tmp.path()).unwrap();
        for m in &met {
            let want = DamagedRecord {
                record: m.record,
                shard: shard.clone(),
                shard_record: m.record,
                offset: first.record(m.record).unwrap().meta.offset,
            };
            assert_eq!(m, &want, "{what}");
        }
    }
}

#[test]
fn past_the_ceiling_damaged_records_stop_the_loader_with_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let damaged: Vec<u64> = (0..40).step_by(4).collect();
    let (ds, _) = dataset_with_damage(tmp.path(), &damaged);
    for max in [MaxDamaged::Count(3), MaxDamaged::Fraction(0.05)] {
        let cfg = LoaderConfig {
            max_damaged: max,
            ..config(2, 8)
        };
        let mut l = Loader::new(Arc::clone(&ds), cfg, Position::default()).unwrap();
        let err = (0..10)
            .find_map(|_| l.next_batch().err())
            .expect("10 damaged records of 40 went through");
        let msg = err.to_string();
        assert!(
            matches!(err, LoaderError::TooManyDamaged { limit, .. } if limit == max.limit(40)),
            "{msg}"
        );
        assert!(
            msg.contains("--max-damaged") && msg.contains("shard-00000.bshard"),
            "{msg}"
        );
    }
}

#[test]
fn damage_to_a_shard_header_or_index_stops_whatever_the_policy() {
    for (what, at) in [("header", 8usize), ("index", 1)] {
        let tmp = tempfile::tempdir().unwrap();
        let (ds, shard) = dataset_with_damage(tmp.path(), &[]);
        drop(ds);
        let mut bytes = fs::read(&shard).unwrap();
        // The header's first bytes; the index is the file's last 32 bytes a record.
        let i = if what == "header" {
            at
        } else {
            bytes.len() - 40 * 32 + at
        };
        bytes[i] ^= 0x10;
        fs::write(&shard, &bytes).unwrap();
        // Opening the dataset checks every header and index: neither
        // policy gets to see a record.
        let err = Dataset::open(tmp.path()).err().map(|e| e.to_string());
        let msg = err.unwrap_or_else(|| panic!("{what} damage went unnoticed"));
        assert!(msg.contains("shard-00000.bshard"), "{what}: {msg}");
    }
}

#[test]
fn every_read_path_delivers_the_same_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path(), 3, 12);
    let run = |read| {
        let cfg = LoaderConfig {
            read,
            read_ahead: 5,
            ..config(2, 4)
        };
        let mut l = Loader::new(Arc::clone(&ds), cfg, Position::default()).unwrap();
        take(&mut l, 20) // two epochs
    };
    let map = run(ReadPath::Map);
    // A dataset this small is read from the maps by default.
    assert_eq!(ReadPath::Auto.resolve(&ds), ReadPath::Map);
    assert!(map == run(ReadPath::Auto), "auto differs");
    assert!(map == run(ReadPath::MapAdvised), "map-advised differs");
    assert!(map == run(ReadPath::Pread), "pread differs");
}

#[test]
fn dropping_the_loader_stops_every_worker_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path(), 2, 20);
    let (tx, rx) = std::sync::mpsc::channel();
    let outer = Arc::clone(&ds);
    let ds2 = Arc::clone(&ds);
    std::thread::spawn(move || {
        // A full pipeline: workers are blocked waiting for free buffers.
        let mut l = Loader::new(ds2, config(4, 4), Position::default()).unwrap();
        let _ = l.next_batch().unwrap().len();
        std::thread::sleep(Duration::from_millis(100));
        drop(l);
        // And a loader dropped before any batch was asked for.
        drop(Loader::new(ds, config(4, 4), Position::default()).unwrap());
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("dropping the loader hung");
    // Every worker has exited and released its handle on the dataset.
    assert_eq!(Arc::strong_count(&outer), 1);
}

#[test]
fn f32_views_are_normalised_u8_views() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dataset(tmp.path(), 2, 8);
    let mut cu = config(2, 4);
    cu.format = PixelFormat::U8;
    let mut cf = cu.clone();
    cf.format = PixelFormat::F32;
    let u = take(
        &mut Loader::new(Arc::clone(&ds), cu, Position::default()).unwrap(),
        1,
    );
    let f = take(&mut Loader::new(ds, cf, Position::default()).unwrap(), 1);
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let plane = 32 * 32;
    for (i, (&q, &x)) in u[0].1.iter().zip(&f[0].3).enumerate() {
        let c = (i / plane) % 3;
        let back = (x * std[c] + mean[c]) * 255.0;
        assert!(
            (back - q as f32).abs() <= 0.51,
            "pixel {i}: u8 {q} vs f32 {back}"
        );
    }
}

/// Every JPEG kind of the golden decode set (baseline, progressive, 4:2:0,
/// 4:2:2, 4:4:4, grayscale, CMYK with and without the Adobe marker, YCCK,
/// restart markers, odd sizes), shardified as they are.
fn mixed_kinds(dir: &Path) -> Arc<Dataset> {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/jpeg");
    let mut list = String::new();
    for e in fs::read_dir(&golden).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "jpg") {
            list.push_str(&format!("{}\n", p.display()));
        }
    }
    let list_path = dir.join("list.txt");
    fs::write(&list_path, list).unwrap();
    let out = dir.join("shards");
    let s = shardify::shardify(
        &Input::FileList(list_path),
        &out,
        &Options::default(),
        &Silent,
    )
    .unwrap();
    assert_eq!((s.records, s.rejected.len(), s.transcoded), (14, 0, 0));
    Arc::new(Dataset::open(&out).unwrap())
}

#[test]
fn batches_of_every_jpeg_kind_are_identical_for_any_thread_count_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = mixed_kinds(tmp.path());
    let run = |threads| {
        let mut l = Loader::new(Arc::clone(&ds), config(threads, 5), Position::default()).unwrap();
        // Two epochs of two batches: every record rendered four times, in
        // an order that differs from run to run only in timing.
        let batches = take(&mut l, 4);
        assert_eq!(l.stats().decode_failures, 0, "a JPEG kind failed to decode");
        batches
    };
    let one = run(1);
    for threads in [2, 3, 3] {
        assert!(
            run(threads) == one,
            "batches differ with {threads} threads from those of one thread"
        );
    }
}
