//! Evaluation and interop commands as a user runs them on a short run:
//! `export`, `eval knn --weights`, `embed --image` / `--data`, `eval
//! linear` and `report`.

mod common;

use std::path::{Path, PathBuf};

use barlow::prep::shardify::{self, Input, Layout, Options};
use barlow::progress::Silent;
use common::*;

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn shardify_folder(src: &Path, out: &Path, layout: Layout) -> PathBuf {
    let input = Input::Folder {
        path: src.to_path_buf(),
        layout,
    };
    shardify::shardify(&input, out, &Options::default(), &Silent).unwrap();
    out.to_path_buf()
}

/// A 12-step run (2 classes x 24 images, batch 8, width 8, 16 px) with the
/// kNN monitor on, in `dir/run`; returns (dataset, run).
fn short_run(dir: &Path) -> (PathBuf, PathBuf) {
    image_folder(&dir.join("src"), 2, 24);
    let data = shardify_folder(&dir.join("src"), &dir.join("shards"), Layout::ImageFolder);
    let run = dir.join("run");
    ok(barlow()
        .args([
            "train",
            "--arch",
            "resnet18",
            "--width",
            "8",
            "--image-size",
            "16",
        ])
        .args(["--batch-size", "8", "--projector", "32-32", "--epochs", "2"])
        .args(["--log-every", "2", "--threads", "2"])
        .arg("--data")
        .arg(&data)
        .arg("--val")
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap());
    (data, run)
}

/// The float32 values of a `.npy` file written by `barlow embed`.
fn npy_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn export_embed_probe_and_report_of_a_short_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = short_run(tmp.path());

    // kNN of the checkpoint and of its export agree exactly.
    let file = tmp.path().join("backbone.safetensors");
    let out = ok(barlow()
        .arg("export")
        .arg("--checkpoint")
        .arg(&run)
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap());
    assert!(
        out.contains("to load it into torchvision.models.resnet18()"),
        "{out}"
    );
    let knn = |flag: &str, path: &Path| {
        let out = ok(barlow()
            .args(["eval", "knn", flag])
            .arg(path)
            .arg("--train")
            .arg(&data)
            .arg("--val")
            .arg(&data)
            .args(["--image-size", "16", "--json", "--threads", "2"])
            .output()
            .unwrap());
        last_json(&out)
    };
    let a = knn("--checkpoint", &run);
    let b = knn("--weights", &file);
    assert_eq!(a["top1"], b["top1"]);
    assert_eq!(a["top5"], b["top5"]);
    // A val set whose class folders differ is refused: its label numbers
    // would mean other classes.
    image_folder(&tmp.path().join("src3"), 3, 2);
    let three = shardify_folder(
        &tmp.path().join("src3"),
        &tmp.path().join("shards3"),
        Layout::ImageFolder,
    );
    let out = barlow()
        .args(["eval", "knn", "--checkpoint"])
        .arg(&run)
        .arg("--train")
        .arg(&data)
        .arg("--val")
        .arg(&three)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("name different classes"),
        "{err}"
    );

    // One image: `embed --image` and `embed --data` of a one-record set.
    let one = tmp.path().join("one");
    let image = one.join("img.jpg");
    write(&image, &jpeg(45, 29, 7));
    let one_ds = shardify_folder(&one, &tmp.path().join("one-shards"), Layout::Flat);
    let out = ok(barlow()
        .args(["embed", "--checkpoint"])
        .arg(&run)
        .arg("--image")
        .arg(&image)
        .output()
        .unwrap());
    let from_image: Vec<f32> = last_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let npy = tmp.path().join("e.npy");
    ok(barlow()
        .args(["embed", "--checkpoint"])
        .arg(&run)
        .arg("--data")
        .arg(&one_ds)
        .arg("--out")
        .arg(&npy)
        .output()
        .unwrap());
    let from_data = npy_f32(&npy);
    assert_eq!(from_image.len(), 64);
    assert_eq!(from_image, from_data);
    assert!(tmp.path().join("e.labels.npy").is_file());

    // A linear probe of the checkpoint logs its epochs into the run.
    let out = ok(barlow()
        .args(["eval", "linear", "--checkpoint"])
        .arg(&run)
        .arg("--train")
        .arg(&data)
        .arg("--val")
        .arg(&data)
        .args(["--epochs", "3", "--batch-size", "16", "--threads", "2"])
        .output()
        .unwrap());
    let r = last_json(&out);
    assert_eq!(r["epochs"], 3);
    assert_eq!(r["classes"], 2);
    assert_eq!(r["top5"], 100.0, "two classes: both are in the top 5");
    let log = std::fs::read_to_string(run.join("linear.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![12, 12, 12]);
    // With cached features: the same log twice, and a falling loss.
    let cached = |log: &Path| {
        ok(barlow()
            .args(["eval", "linear", "--cached-features", "--checkpoint"])
            .arg(&run)
            .arg("--train")
            .arg(&data)
            .arg("--val")
            .arg(&data)
            .args([
                "--epochs",
                "5",
                "--batch-size",
                "8",
                "--threads",
                "2",
                "--log",
            ])
            .arg(log)
            .output()
            .unwrap());
        std::fs::read_to_string(log).unwrap()
    };
    let first = cached(&tmp.path().join("a.jsonl"));
    assert_eq!(first, cached(&tmp.path().join("b.jsonl")));
    let losses: Vec<f64> = first
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 5);
    assert!(losses[4] < losses[0], "{losses:?}");

    // The report: a page with six SVG charts and the config, and PNGs.
    let out = ok(barlow().arg("report").arg(&run).output().unwrap());
    assert!(out.contains("index.html"), "{out}");
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 6);
    for text in [
        "kNN top-1",
        "linear top-1",
        "images / s",
        "lambda",
        "0.0051",
    ] {
        assert!(html.contains(text), "{text} missing from the report");
    }
    for load in ["src=", "href=", "<script", "<link", "url("] {
        assert!(!html.contains(load), "the page loads something: {load}");
    }
    for png in [
        "loss",
        "lr_weights",
        "lr_biases",
        "images_per_sec",
        "data_wait",
        "accuracy",
    ] {
        let img = image::open(run.join(format!("report/{png}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (900, 420), "{png}");
    }
}

#[test]
fn eval_commands_refuse_bad_sources_in_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = barlow()
        .args(["embed", "--image", "x.jpg"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"junk").unwrap();
    let out = barlow()
        .args(["embed", "--image", "x.jpg", "--weights"])
        .arg(&junk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("junk.safetensors") && err.contains("not a safetensors"),
        "{err}"
    );
    let out = barlow().arg("report").arg(tmp.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a run folder"), "{err}");
}
