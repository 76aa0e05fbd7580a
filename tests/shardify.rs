//! `shardify` end to end, through the library and through the binary.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use barlow::data::decode;
use barlow::data::shard::{Dataset, FLAG_DOWNSIZED, FLAG_TRANSCODED, NO_LABEL};
use barlow::prep::shardify::{self, Input, Layout, Options, ShardifyError};
use barlow::progress::Silent;
use common::*;

fn folder(path: &Path) -> Input {
    Input::Folder {
        path: path.to_path_buf(),
        layout: Layout::Auto,
    }
}

fn opts(threads: usize) -> Options {
    Options {
        threads,
        ..Options::default()
    }
}

fn shardify_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardify"))
}

#[test]
fn keeps_every_decodable_kind_and_counts_them_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for (class, name) in [
        ("a_photos", "baseline.jpg"),
        ("a_photos", "progressive.jpg"),
        ("b_odd", "cmyk.jpg"),
        ("b_odd", "gray.jpg"),
        ("b_odd", "png_named.JPEG"),
    ] {
        write(
            &src.join(class).join(name),
            &fs::read(fixture(name)).unwrap(),
        );
    }
    let out = tmp.path().join("out");
    let s = shardify::shardify(&folder(&src), &out, &opts(2), &Silent).unwrap();
    assert_eq!(s.layout, "image-folder");
    assert_eq!(s.records, 5);
    assert_eq!(s.transcoded, 1);
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);

    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.manifest().num_records, 5);
    assert_eq!(ds.manifest().classes, ["a_photos", "b_odd"]);
    assert_eq!(ds.manifest().source.transcoded, 1);
    let expect = [
        (0, 80, 60, 0, "baseline.jpg"),
        (0, 72, 54, 0, "progressive.jpg"),
        (1, 64, 64, 0, "cmyk.jpg"),
        (1, 60, 40, 0, "gray.jpg"),
        (1, 50, 50, FLAG_TRANSCODED, "png_named.JPEG"),
    ];
    for (i, (label, w, h, flags, name)) in expect.into_iter().enumerate() {
        let r = ds.record(i as u64).unwrap();
        assert_eq!(
            (r.meta.label, r.meta.width, r.meta.height, r.meta.flags),
            (label, w, h, flags),
            "{name}"
        );
        if flags == 0 {
            assert_eq!(
                r.bytes,
                &fs::read(fixture(name)).unwrap()[..],
                "{name} kept byte for byte"
            );
        }
        let img = decode::decode_jpeg(r.bytes, u64::MAX).unwrap();
        assert_eq!((img.width, img.height), (w, h), "{name}");
    }
    // The CMYK rose is mostly red, like the RGB one: colour conversion happened.
    let rgb_mean = |i: u64| {
        let img = decode::decode_jpeg(ds.record(i).unwrap().bytes, u64::MAX).unwrap();
        let n = (img.width * img.height) as f64;
        let mut m = [0f64; 3];
        for p in img.pixels.chunks_exact(3) {
            for c in 0..3 {
                m[c] += p[c] as f64 / n;
            }
        }
        m
    };
    let (base, cmyk) = (rgb_mean(0), rgb_mean(2));
    for c in 0..3 {
        assert!(
            (base[c] - cmyk[c]).abs() < 25.0,
            "channel {c}: {base:?} vs {cmyk:?}"
        );
    }
}

#[test]
fn rejects_each_bad_file_with_its_reason_and_keeps_the_good_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let good = jpeg(40, 30, 3);
    let truncated = &good[..good.len() * 6 / 10];
    let random: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut corrupt_header = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x03];
    corrupt_header.extend_from_slice(&[0x13; 64]);
    let files: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("good1.jpg", good.clone(), None),
        ("good2.JPEG", jpeg(33, 21, 4), None),
        ("empty.jpg", vec![], Some("empty")),
        ("random.jpg", random, Some("not-an-image")),
        (
            "text.JPEG",
            b"<html>not found</html>\n".to_vec(),
            Some("not-an-image"),
        ),
        ("truncated.jpg", truncated.to_vec(), Some("truncated")),
        (
            "header_only.jpg",
            good[..40].to_vec(),
            Some("corrupt-header"),
        ),
        ("corrupt_header.jpg", corrupt_header, Some("corrupt-header")),
        ("bomb.jpg", jpeg_claiming(60000), Some("too-large")),
        ("bomb.png", png_claiming(100_000), Some("too-large")),
    ];
    for (name, bytes, _) in &files {
        write(&src.join(name), bytes);
    }
    // Not an image extension: passed over, and counted as such.
    write(&src.join("notes.txt"), b"hello");
    let out = tmp.path().join("out");
    let s = shardify::shardify(&folder(&src), &out, &opts(2), &Silent).unwrap();
    assert_eq!(s.layout, "flat");
    assert_eq!(s.records, 2);
    assert_eq!(s.ignored, 1);
    let got: BTreeMap<String, String> = s
        .rejected
        .iter()
        .map(|r| {
            let name = Path::new(&r.path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, r.reason.clone())
        })
        .collect();
    for (name, _, reason) in &files {
        match reason {
            Some(reason) => assert_eq!(
                got.get(*name).map(String::as_str),
                Some(*reason),
                "{name}: {got:?}"
            ),
            None => assert!(!got.contains_key(*name), "{name} rejected"),
        }
    }
    let tsv = fs::read_to_string(out.join(shardify::REJECTS_FILE)).unwrap();
    assert_eq!(tsv.lines().count(), 1 + 8);
    assert!(
        tsv.contains("bomb.jpg\ttoo-large\tdeclared size 60000x60000"),
        "{tsv}"
    );
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.manifest().source.rejected.values().sum::<u64>(), 8);
    assert_eq!(ds.manifest().source.rejected["not-an-image"], 2);
    assert_eq!(ds.record(0).unwrap().meta.label, NO_LABEL);
    assert!(ds.manifest().classes.is_empty());
}

#[test]
fn binary_exits_zero_on_bad_files_and_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("cat/ok.jpg"), &jpeg(20, 20, 1));
    write(&src.join("cat/bad.jpg"), b"GIF89a garbage");
    write(&src.join("dog/empty.jpg"), b"");
    let out = tmp.path().join("out");
    let o = shardify_bin()
        .arg(&src)
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("bad.jpg"), "{stdout}");
    assert!(stdout.contains("empty.jpg: empty"), "{stdout}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["records"], 1);
    assert_eq!(last["rejected"]["empty"], 1);
    let check = shardify_bin().arg("--check").arg(&out).output().unwrap();
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("OK"));
}

#[test]
fn two_runs_give_identical_bytes_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 3, 40);
    write(&src.join("class1/zz_bad.jpg"), b"nope");
    write(
        &src.join("class2/yy.png"),
        &fs::read(fixture("png_named.JPEG")).unwrap(),
    );
    let small_shards = |threads| Options {
        threads,
        shard_size: 16 << 10,
        ..Options::default()
    };
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let sa = shardify::shardify(&folder(&src), &a, &small_shards(1), &Silent).unwrap();
    let sb = shardify::shardify(&folder(&src), &b, &small_shards(3), &Silent).unwrap();
    assert!(sa.shards >= 4, "want several shards, got {}", sa.shards);
    assert_eq!((sa.records, sa.shards), (sb.records, sb.shards));
    let (fa, fb) = (folder_bytes(&a), folder_bytes(&b));
    assert_eq!(fa.len(), fb.len());
    for ((na, ba), (nb, bb)) in fa.iter().zip(&fb) {
        assert_eq!(na, nb);
        if na != "manifest.json" && na != "rejects.tsv" {
            assert!(ba == bb, "{na} differs");
        }
    }
    // Records come in sorted input order: class by class, file by file.
    let ds = Dataset::open(&a).unwrap();
    let labels: Vec<u32> = (0..ds.len())
        .map(|i| ds.record(i).unwrap().meta.label)
        .collect();
    assert!(labels.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(ds.len(), 121);
    // Every shard respects the size target unless it holds a single record.
    for s in ds.shards() {
        assert!(s.file_len() <= (16 << 10) + 64 + 32 * s.len() as u64 || s.len() == 1);
    }
}

#[test]
fn abort_mid_run_then_rerun_resumes_to_the_same_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 2, 60);
    let clean = tmp.path().join("clean");
    let out = tmp.path().join("out");
    let args = |o: &Path| {
        let mut c = shardify_bin();
        c.arg(&src)
            .arg(o)
            .args(["--shard-size", "8K", "--threads", "2"]);
        c
    };
    assert!(args(&clean).output().unwrap().status.success());

    let aborted = args(&out)
        .args(["--abort-after-shards", "3"])
        .output()
        .unwrap();
    assert!(!aborted.status.success(), "the abort hook did not fire");
    assert!(
        !out.join("manifest.json").exists(),
        "manifest written by an interrupted run"
    );
    assert!(out.join(".shardify-journal.json").exists());
    assert!(out.join("shard-00002.bshard").exists());
    // A dataset without its manifest is not a dataset.
    assert!(Dataset::open(&out).is_err());

    let resumed = args(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{stdout}");
    assert!(stdout.contains("resumed at input"), "{stdout}");
    assert!(!out.join(".shardify-journal.json").exists());
    let (a, b) = (folder_bytes(&clean), folder_bytes(&out));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        if n.ends_with(".bshard") {
            assert!(x == y, "{n} differs after resume");
        }
    }
    assert_eq!(Dataset::open(&out).unwrap().len(), 120);
}

#[test]
fn kill_9_at_any_moment_then_rerun_gives_a_valid_complete_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 2, 150);
    let clean = tmp.path().join("clean");
    let o = shardify_bin()
        .arg(&src)
        .arg(&clean)
        .args(["--shard-size", "4K"])
        .output()
        .unwrap();
    assert!(o.status.success());
    // The bytes that must come out the same: every shard and the reject list.
    let data_bytes = |dir: &Path| {
        folder_bytes(dir)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".bshard") || n.ends_with(".tsv"))
            .collect::<Vec<_>>()
    };
    let want = data_bytes(&clean);
    assert!(
        want.len() > 10,
        "too few shards to interrupt: {}",
        want.len()
    );
    let mut interrupted = 0;
    for (k, delay_ms) in [5u64, 30, 80, 200].into_iter().enumerate() {
        let out = tmp.path().join(format!("out{k}"));
        let mut child = shardify_bin()
            .arg(&src)
            .arg(&out)
            .args(["--shard-size", "4K", "--threads", "1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL on Unix
        let _ = child.wait();
        // Killed mid-run: the journal is there and no manifest is.
        if out.join(".shardify-journal.json").exists() && !out.join("manifest.json").exists() {
            interrupted += 1;
        }
        if !out.join("manifest.json").exists() {
            let o = shardify_bin()
                .arg(&src)
                .arg(&out)
                .args(["--shard-size", "4K"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let check = shardify_bin().arg("--check").arg(&out).output().unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        assert_eq!(Dataset::open(&out).unwrap().len(), 300);
        assert!(
            data_bytes(&out) == want,
            "killed after {delay_ms} ms: the rerun's shards differ from an uninterrupted run's"
        );
    }
    assert!(interrupted >= 1, "no kill landed in the middle of a run");
}

#[test]
fn rerun_over_a_complete_dataset_refuses_and_overwrite_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 1, 5);
    let out = tmp.path().join("out");
    shardify::shardify(&folder(&src), &out, &opts(1), &Silent).unwrap();
    let e = shardify::shardify(&folder(&src), &out, &opts(1), &Silent).unwrap_err();
    assert!(matches!(e, ShardifyError::Refused(_)), "{e}");
    assert!(
        e.to_string().contains("already holds a complete dataset"),
        "{e}"
    );
    assert_eq!(
        Dataset::open(&out).unwrap().len(),
        5,
        "refusal changed nothing"
    );

    image_folder(&src, 2, 5);
    // Files that are not ours survive --overwrite, dot-files included.
    write(&out.join(".notes.tmp"), b"mine");
    write(&out.join("keep.txt"), b"mine");
    let o = Options {
        overwrite: true,
        ..opts(1)
    };
    let s = shardify::shardify(&folder(&src), &out, &o, &Silent).unwrap();
    assert_eq!(s.records, 10);
    assert_eq!(fs::read(out.join(".notes.tmp")).unwrap(), b"mine");
    assert_eq!(fs::read(out.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(Dataset::open(&out).unwrap().len(), 10);
}

#[test]
fn unfinished_run_with_other_options_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 2, 30);
    let out = tmp.path().join("out");
    let o = shardify_bin()
        .arg(&src)
        .arg(&out)
        .args(["--shard-size", "4K", "--abort-after-shards", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = shardify_bin()
        .arg(&src)
        .arg(&out)
        .args(["--shard-size", "8K"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unfinished run over different input files or options"),
        "{err}"
    );
}

#[test]
fn stray_shards_without_journal_or_manifest_are_not_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 1, 3);
    let out = tmp.path().join("out");
    write(&out.join("shard-00000.bshard"), b"somebody else's");
    let e = shardify::shardify(&folder(&src), &out, &opts(1), &Silent).unwrap_err();
    assert!(matches!(e, ShardifyError::Refused(_)), "{e}");
    assert_eq!(
        fs::read(out.join("shard-00000.bshard")).unwrap(),
        b"somebody else's"
    );
}

#[test]
fn check_reports_a_damaged_record_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 2, 10);
    let out = tmp.path().join("out");
    shardify::shardify(&folder(&src), &out, &opts(2), &Silent).unwrap();
    let shard = out.join("shard-00000.bshard");
    let mut b = fs::read(&shard).unwrap();
    b[500] ^= 0x55;
    fs::write(&shard, &b).unwrap();
    let report = shardify::check(&out, false, 1, &Silent).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("shard-00000.bshard"));
    assert!(report.problems[0].contains("checksum mismatch"));
    let o = shardify_bin().arg("--check").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAILED: 1 problems"));

    // A truncated shard is reported, not a crash.
    fs::write(&shard, &b[..b.len() - 10]).unwrap();
    let report = shardify::check(&out, true, 1, &Silent).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("truncated or damaged")),
        "{:?}",
        report.problems
    );
}

#[test]
fn file_list_with_class_names_numeric_labels_or_none() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    for i in 0..4 {
        write(&imgs.join(format!("{i}.jpg")), &jpeg(16, 16, i));
    }
    let cases = [
        (
            "imgs/0.jpg\tzebra\nimgs/1.jpg\tant\n# comment\n\nimgs/2.jpg\tzebra\n",
            vec![1, 0, 1],
            vec!["ant", "zebra"],
        ),
        ("imgs/3.jpg\t2\nimgs/0.jpg\t10\n", vec![2, 10], vec![]),
        ("imgs/2.jpg\nimgs/1.jpg\n", vec![NO_LABEL, NO_LABEL], vec![]),
    ];
    for (k, (text, labels, classes)) in cases.into_iter().enumerate() {
        let list = tmp.path().join(format!("list{k}.tsv"));
        fs::write(&list, text).unwrap();
        let out = tmp.path().join(format!("out{k}"));
        shardify::shardify(&Input::FileList(list), &out, &opts(1), &Silent).unwrap();
        let ds = Dataset::open(&out).unwrap();
        let got: Vec<u32> = (0..ds.len())
            .map(|i| ds.record(i).unwrap().meta.label)
            .collect();
        assert_eq!(got, labels, "case {k}");
        if k == 1 {
            assert_eq!(ds.manifest().classes.len(), 11);
            assert_eq!(ds.manifest().classes[10], "10");
        } else {
            assert_eq!(ds.manifest().classes, classes, "case {k}");
        }
        assert_eq!(ds.manifest().source.layout, "file-list");
    }
    let mixed = tmp.path().join("mixed.tsv");
    fs::write(&mixed, "imgs/0.jpg\tcat\nimgs/1.jpg\n").unwrap();
    let e = shardify::shardify(
        &Input::FileList(mixed),
        &tmp.path().join("m"),
        &opts(1),
        &Silent,
    )
    .unwrap_err();
    assert!(e.to_string().contains("mixed.tsv:2"), "{e}");
}

#[test]
fn max_side_downsizes_and_verify_decodes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("big.jpg"), &jpeg(300, 120, 1));
    write(&src.join("small.jpg"), &jpeg(50, 40, 2));
    let out = tmp.path().join("out");
    let o = Options {
        max_side: Some(100),
        verify: true,
        ..opts(2)
    };
    let s = shardify::shardify(&folder(&src), &out, &o, &Silent).unwrap();
    assert_eq!(s.downsized, 1);
    let ds = Dataset::open(&out).unwrap();
    let big = ds.record(0).unwrap();
    assert_eq!(
        (big.meta.width, big.meta.height, big.meta.flags),
        (100, 40, FLAG_DOWNSIZED)
    );
    let img = decode::decode_jpeg(big.bytes, u64::MAX).unwrap();
    assert_eq!((img.width, img.height), (100, 40));
    assert_eq!(
        ds.record(1).unwrap().bytes,
        &fs::read(src.join("small.jpg")).unwrap()[..]
    );
    assert!(shardify::check(&out, true, 2, &Silent).unwrap().ok());
}

#[test]
fn no_images_at_all_is_an_error_that_writes_no_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a.jpg"), b"");
    let out = tmp.path().join("out");
    let e = shardify::shardify(&folder(&src), &out, &opts(1), &Silent).unwrap_err();
    assert!(
        matches!(
            e,
            ShardifyError::NoImages {
                seen: 1,
                rejected: 1
            }
        ),
        "{e}"
    );
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn verify_rejects_what_only_a_full_decode_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // A scan that selects Huffman tables the file never defines: the headers
    // and the end marker are fine, the image data cannot be decoded.
    let mut b = jpeg(32, 32, 5);
    let sos = b.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    b[sos + 6] = 0x33;
    write(&src.join("bad_scan.jpg"), &b);
    write(&src.join("good.jpg"), &jpeg(32, 32, 6));
    let quick =
        shardify::shardify(&folder(&src), &tmp.path().join("q"), &opts(1), &Silent).unwrap();
    assert_eq!(quick.records, 2, "headers alone cannot see this damage");
    let o = Options {
        verify: true,
        ..opts(1)
    };
    let full = shardify::shardify(&folder(&src), &tmp.path().join("v"), &o, &Silent).unwrap();
    assert_eq!(full.records, 1);
    assert_eq!(full.rejected.len(), 1);
    assert_eq!(
        full.rejected[0].reason, "decode-failed",
        "{:?}",
        full.rejected
    );
    // And `--check --decode` finds it in the quick dataset.
    let report = shardify::check(&tmp.path().join("q"), true, 1, &Silent).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

#[test]
fn unreadable_zero_size_and_unencodable_files_are_rejected_too() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("good.jpg"), &jpeg(20, 20, 9));
    // A dangling symlink: listed like a file, cannot be read.
    std::os::unix::fs::symlink(tmp.path().join("nowhere.jpg"), src.join("dangling.jpg")).unwrap();
    // A JPEG whose frame header declares zero lines.
    write(&src.join("zero.jpg"), &jpeg_claiming(0));
    // A decodable PNG wider than JPEG's 65,535-pixel limit: cannot be transcoded.
    let mut wide = Vec::new();
    image::RgbImage::new(70_000, 1)
        .write_to(
            &mut std::io::Cursor::new(&mut wide),
            image::ImageFormat::Png,
        )
        .unwrap();
    write(&src.join("wide.png"), &wide);
    let out = tmp.path().join("out");
    let s = shardify::shardify(&folder(&src), &out, &opts(2), &Silent).unwrap();
    assert_eq!(s.records, 1);
    let reasons: BTreeMap<String, String> = s
        .rejected
        .iter()
        .map(|r| {
            (
                Path::new(&r.path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                r.reason.clone(),
            )
        })
        .collect();
    assert_eq!(reasons["dangling.jpg"], "unreadable");
    assert_eq!(reasons["wide.png"], "encode-failed");
    // zune-jpeg refuses a zero dimension while reading the header (our own
    // `zero-size` check backs it up for other decoders).
    assert_eq!(reasons["zero.jpg"], "corrupt-header");
}

#[test]
fn a_full_disk_stops_the_run_with_the_file_named_and_a_rerun_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    image_folder(&src, 2, 40);
    let clean = tmp.path().join("clean");
    let args = ["--shard-size", "16K"];
    let o = shardify_bin()
        .arg(&src)
        .arg(&clean)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = tmp.path().join("out");
    // Files capped at 8 KiB: the first 16 KiB shard cannot be written.
    let o = with_file_cap(8, env!("CARGO_BIN_EXE_shardify"))
        .arg(&src)
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the capped run succeeded");
    assert!(
        err.contains("shard-00000.bshard") && err.contains("too large"),
        "{err}"
    );
    assert!(
        !out.join("manifest.json").exists(),
        "manifest after a failed run"
    );
    assert!(Dataset::open(&out).is_err());
    // With space again, the same command finishes the dataset, as an
    // uninterrupted run would have made it.
    let o = shardify_bin()
        .arg(&src)
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shards = |d: &Path| {
        folder_bytes(d)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".bshard"))
            .collect::<Vec<_>>()
    };
    assert!(shards(&out) == shards(&clean), "shards differ");
}
