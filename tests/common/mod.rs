//! Builders of small image corpora for the end-to-end tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use barlow::data::decode::RgbImage;
use barlow::prep::transcode;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A JPEG of a pattern that depends on `seed`.
pub fn jpeg(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let v = x.wrapping_mul(7 + seed) ^ y.wrapping_mul(13 + seed);
            pixels.extend_from_slice(&[v as u8, (v >> 3) as u8, (x + y + seed) as u8]);
        }
    }
    transcode::encode_jpeg(
        &RgbImage {
            width,
            height,
            pixels,
        },
        90,
    )
    .unwrap()
}

/// A JPEG whose frame header claims `side` x `side` pixels.
pub fn jpeg_claiming(side: u16) -> Vec<u8> {
    let mut b = jpeg(16, 16, 1);
    let sof = b
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    // FF C0, length (2), precision (1), height (2), width (2)
    b[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
    b
}

/// A PNG whose header claims `side` x `side` pixels (checksum fixed up).
pub fn png_claiming(side: u32) -> Vec<u8> {
    let mut b = fs::read(fixture("png_named.JPEG")).unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4).
    b[16..20].copy_from_slice(&side.to_be_bytes());
    b[20..24].copy_from_slice(&side.to_be_bytes());
    let crc = crc32fast::hash(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// An ImageFolder tree with `classes` x `per_class` generated JPEGs of
/// varied sizes.
pub fn image_folder(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        for i in 0..per_class {
            let seed = (c * 1000 + i) as u32;
            let bytes = jpeg(24 + (seed % 40), 20 + (seed * 7 % 50), seed);
            write(&root.join(format!("class{c}/img{i:04}.jpg")), &bytes);
        }
    }
}

/// Every file of a folder (not recursive), name -> bytes, sorted.
pub fn folder_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `program args...` run with every file it writes capped at `kib` KiB, as
/// a full disk would stop it: writes past the cap fail with "File too
/// large" (SIGXFSZ is ignored, so the program sees the error).
#[allow(dead_code)]
pub fn with_file_cap(kib: u64, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg("trap '' XFSZ; ulimit -f \"$0\"; exec \"$@\"")
        .arg((kib * 2).to_string())
        .arg(program);
    c
}

/// A one-shard dataset in `dir` holding `records` as they are (written
/// without shardify, so they may be anything), labelled 0 and 1 in turn.
#[allow(dead_code)]
pub fn dataset_of(dir: &Path, records: &[Vec<u8>]) -> barlow::data::shard::Dataset {
    use barlow::data::shard::manifest::{FORMAT_NAME, MANIFEST_FILE, SourceInfo};
    use barlow::data::shard::{Dataset, Manifest, ShardWriter, VERSION};
    let mut w = ShardWriter::create(dir, 0).unwrap();
    for (i, bytes) in records.iter().enumerate() {
        w.append(bytes, i as u32 % 2, 40, 30, 0).unwrap();
    }
    let info = w.finish().unwrap();
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: VERSION,
        num_records: records.len() as u64,
        classes: vec!["a".into(), "b".into()],
        shards: vec![info],
        source: SourceInfo {
            input: "test".into(),
            layout: "flat".into(),
            files_seen: records.len() as u64,
            transcoded: 0,
            downsized: 0,
            rejected: Default::default(),
            options: serde_json::Value::Null,
            tool: "test".into(),
        },
    };
    manifest.write(&dir.join(MANIFEST_FILE)).unwrap();
    Dataset::open(dir).unwrap()
}

/// The `barlow` binary of this build.
pub fn barlow() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_barlow"))
}

/// The standard output of a command that must have succeeded (else the
/// test fails showing both outputs).
pub fn ok(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A dataset of 48 generated images in 2 classes, shardified into
/// `dir/shards`.
pub fn dataset(dir: &Path) -> PathBuf {
    use barlow::prep::shardify::{self, Input, Layout, Options};
    let src = dir.join("src");
    image_folder(&src, 2, 24);
    let out = dir.join("shards");
    let input = Input::Folder {
        path: src,
        layout: Layout::ImageFolder,
    };
    shardify::shardify(&input, &out, &Options::default(), &barlow::progress::Silent).unwrap();
    out
}

/// `barlow train` flags of a small CPU run (6 steps an epoch on
/// [`dataset`], 20 epochs, a log line every step).
pub const SMALL: &[&str] = &[
    "--arch",
    "resnet18",
    "--width",
    "8",
    "--small-stem",
    "--image-size",
    "16",
    "--batch-size",
    "8",
    "--projector",
    "32-32",
    "--epochs",
    "20",
    "--log-every",
    "1",
    "--threads",
    "2",
];

/// (step, loss) of every line of a run's log.
pub fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// `got` has `want`'s steps and losses within 1e-5 relative.
pub fn assert_same_losses(got: &[(u64, f64)], want: &[(u64, f64)], what: &str) {
    assert_losses_within(got, want, 1e-5, what);
}

/// `got` has `want`'s steps and losses within `rel` relative.
pub fn assert_losses_within(got: &[(u64, f64)], want: &[(u64, f64)], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for ((s, a), (t, b)) in want.iter().zip(got) {
        assert_eq!(s, t, "{what}");
        assert!(
            (a - b).abs() <= rel * a.abs(),
            "{what}, step {s}: {a} vs {b}"
        );
    }
}
