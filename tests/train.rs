//! `barlow train` (and `eval knn` of its run) as a user runs it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Steps of a `SMALL` run: 48 images / batch 8 = 6 per epoch, 20 epochs.
const STEPS: usize = 120;

fn train_cmd(data: &Path, out: &Path) -> Command {
    let mut c = barlow();
    c.arg("train").arg("--data").arg(data).arg("--out").arg(out);
    c
}

#[test]
fn killed_stopped_and_disk_full_runs_resume_with_the_same_batches_and_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let full = tmp.path().join("full");
    ok(train_cmd(&data, &full).args(SMALL).output().unwrap());
    let want = losses(&full);
    assert_eq!(want.len(), STEPS);

    // The same run, killed (SIGKILL) once it has written a mid-epoch checkpoint.
    let part = tmp.path().join("part");
    let mut child = train_cmd(&data, &part)
        .args(SMALL)
        .args(["--checkpoint-every", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = part.join("checkpoints/step-0000000016/state.json");
    let t = Instant::now();
    while !ckpt.exists() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = losses(&part).len();
    assert!(
        killed_at < STEPS,
        "the run finished before it could be killed"
    );
    // Resume takes the config from the checkpoint: no model flags needed.
    let out = ok(train_cmd(&data, &part)
        .args(["--resume", "--threads", "1"])
        .output()
        .unwrap());
    assert!(out.contains(&format!("{STEPS} steps")), "{out}");
    let got = losses(&part);
    assert_eq!(
        got.iter().map(|l| l.0).collect::<Vec<_>>(),
        (0..STEPS as u64).collect::<Vec<_>>(),
        "each step logged once"
    );
    for ((s, a), (_, b)) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "step {s}: {a} vs {b}");
    }
    assert!(part.join("backbone.bin").is_file() && part.join("loss.png").is_file());

    // SIGTERM (what a cluster sends a preempted job) mid-epoch: the run
    // writes a checkpoint of the step in flight, exits with 130, and
    // --resume continues to the uninterrupted run's losses.
    let term = tmp.path().join("term");
    let child = train_cmd(&data, &term)
        .args(SMALL)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = term.join("log.jsonl");
    let t = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 9
        && t.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let stopped_at: u64 = err
        .split("after step ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stop message: {err}"));
    assert!((9..STEPS as u64).contains(&stopped_at), "{stopped_at}");
    let ckpt = term.join(format!("checkpoints/step-{stopped_at:010}/state.json"));
    assert!(ckpt.is_file(), "no checkpoint at the step it stopped after");
    ok(train_cmd(&data, &term).arg("--resume").output().unwrap());
    let got = losses(&term);
    assert_eq!(got.len(), STEPS, "each step logged once");
    for ((s, a), (_, b)) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "step {s}: {a} vs {b}");
    }

    // A full disk (files capped at 64 KiB) when the next checkpoint is due:
    // a clear error naming the file; the earlier checkpoints stay whole and
    // loadable, and with space again --resume finishes the run.
    let full_disk = tmp.path().join("disk");
    ok(train_cmd(&data, &full_disk)
        .args(SMALL)
        .args(["--max-steps", "12"])
        .output()
        .unwrap());
    // `--resume` with files capped at `kib` KiB: it must fail, naming
    // `file` and the cause.
    let capped_resume_fails_on = |kib: u64, file: &str| {
        let out = with_file_cap(kib, env!("CARGO_BIN_EXE_barlow"))
            .args(["train", "--resume", "--max-steps", "120", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&full_disk)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the capped run succeeded");
        assert!(err.contains(file) && err.contains("too large"), "{err}");
    };
    // Capped at 1 KiB, even the log cannot be written.
    capped_resume_fails_on(1, "log.jsonl");
    capped_resume_fails_on(64, "step-0000000018");
    let newest = barlow::train::checkpoint::resolve(&full_disk).unwrap();
    assert!(newest.ends_with("step-0000000012"), "{}", newest.display());
    barlow::train::checkpoint::load_state(&newest).unwrap();
    ok(train_cmd(&data, &full_disk)
        .args(["--resume", "--max-steps", "120"])
        .output()
        .unwrap());
    let got = losses(&full_disk);
    assert_eq!(got.len(), STEPS, "each step logged once");
    for ((s, a), (_, b)) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "step {s}: {a} vs {b}");
    }

    // Changing the trajectory on resume is refused with a sentence.
    let out = train_cmd(&data, &part)
        .args(["--resume", "--lambda", "0.5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("lambda"), "{err}");

    // kNN of the trained checkpoint, given the run folder.
    let out = ok(barlow()
        .args(["eval", "knn", "--json", "--k", "5", "--checkpoint"])
        .arg(&part)
        .arg("--train")
        .arg(&data)
        .arg("--val")
        .arg(&data)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let top1 = v["top1"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&top1), "{v}");
    assert_eq!(v["evaluated"].as_u64(), Some(48));
    assert!(
        v["checkpoint"]
            .as_str()
            .unwrap()
            .ends_with(&format!("step-{STEPS:010}"))
    );
}

#[test]
fn resume_on_every_launch_starts_from_step_zero_until_there_is_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    // A cluster job's command line: --resume from its first launch. Batches
    // of 2: 24 steps an epoch, so the first checkpoint comes long after the
    // first log line.
    let args: Vec<&str> = SMALL
        .iter()
        .enumerate()
        .map(|(i, a)| match i.checked_sub(1).map(|j| SMALL[j]) {
            Some("--batch-size") => "2",
            _ => a,
        })
        .collect();
    let launch = |out: &Path| {
        let mut c = train_cmd(&data, out);
        c.args(&args).args(["--max-steps", "30", "--resume"]);
        c
    };
    let full = tmp.path().join("full");
    let out = ok(launch(&full).output().unwrap());
    assert!(out.contains("starting from step 0"), "{out}");
    let want = losses(&full);
    assert_eq!(want.len(), 30);

    // Killed (SIGKILL) after its first log line, before its first
    // checkpoint (the end of the first epoch, step 24)...
    let run = tmp.path().join("run");
    let mut child = launch(&run)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(run.join("log.jsonl")).is_ok_and(|l| l.lines().count() >= 1)
        && t.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !losses(&run).is_empty(),
        "the run was killed before its first log line"
    );
    assert!(
        barlow::run::checkpoint::list(&run).unwrap().is_empty(),
        "the run wrote a checkpoint before it was killed"
    );
    // ... and relaunched with the same command line: it trains from step 0,
    // the killed attempt's lines discarded, as if never interrupted.
    let out = ok(launch(&run).output().unwrap());
    assert!(out.contains("starting from step 0"), "{out}");
    assert_same_losses(&losses(&run), &want, "relaunched after a kill");
    // Once there is a checkpoint, the same command line resumes from it.
    let out = ok(launch(&run).output().unwrap());
    assert!(out.contains("30 steps (0 this time)"), "{out}");
    // A config that differs from the checkpoint's is still refused.
    let refused = launch(&run).args(["--seed", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("different config") && err.contains("seed"),
        "{err}"
    );
}

#[test]
fn impossible_backends_fail_with_one_sentence_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("none");
    // The default build has neither GPU feature: cuda and vulkan are
    // refused as not compiled in.
    for extra in [&["--backend", "cuda"][..], &["--backend", "vulkan"][..]] {
        if extra[1] == "cuda" && Path::new("/proc/driver/nvidia").exists() {
            continue;
        }
        let out = train_cmd(&data, &tmp.path().join("run"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("barlow: ") && err.lines().count() == 1,
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // A build with a GPU feature on a machine with a GPU would run the checks.
    if !cfg!(feature = "vulkan") && !Path::new("/proc/driver/nvidia").exists() {
        let out = common::barlow()
            .args(["gpu-check", "--out"])
            .arg(tmp.path().join("check"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("no usable GPU here") && err.lines().count() == 1,
            "{err}"
        );
    }
}

#[test]
fn a_toml_config_sets_the_run_and_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = tmp.path().join("small.toml");
    std::fs::write(
        &cfg,
        "arch = \"resnet18\"\nwidth = 8\nsmall_stem = true\nimage_size = 16\n\
         batch_size = 8\nprojector = [32, 32]\nepochs = 1\nlog_every = 1\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    ok(train_cmd(&data, &run)
        .arg("--config")
        .arg(&cfg)
        .args(["--max-steps", "3", "--precision", "bf16"])
        .output()
        .unwrap());
    assert_eq!(losses(&run).len(), 3);
    // Mixed precision changes the weights a run produces: a resume may
    // not switch it.
    let out = train_cmd(&data, &run)
        .args(["--resume", "--precision", "f32"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("precision"), "{err}");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join("checkpoints/step-0000000003/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["config"]["width"], 8);
    assert_eq!(state["config"]["precision"], "bf16");
    assert_eq!(state["config"]["projector"], serde_json::json!([32, 32]));
    assert_eq!(
        state["position"],
        serde_json::json!({"epoch": 0, "batch": 3})
    );
}

#[test]
fn gpu_check_rehearses_on_the_cpu_with_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::barlow()
        .args(["gpu-check", "--dry-run", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("gpu-check.json")).unwrap()).unwrap();
    assert_eq!(report["passed"], true);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Every check ran, bf16 included (the CPU has it).
    assert_eq!(
        names,
        [
            "dtypes",
            "u8 upload",
            "3 steps vs the CPU",
            "3 bf16 steps vs the CPU",
            "checkpoint cross-load",
            "feed path"
        ]
    );
}

/// Slow (about a minute on 2 cores): `cargo test --test train -- --ignored`.
#[test]
#[ignore]
fn kill_9_at_several_points_including_mid_checkpoint_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let full = tmp.path().join("full");
    ok(train_cmd(&data, &full).args(SMALL).output().unwrap());
    let want = losses(&full);
    // Kill moments: while a checkpoint folder is being written, and after
    // a few, many and most of the logged steps.
    let moments: [(&str, usize); 4] = [
        ("mid-checkpoint", 0),
        ("early", 3),
        ("middle", 50),
        ("late", 100),
    ];
    for (name, after_lines) in moments {
        let run = tmp.path().join(name);
        let mut child = train_cmd(&data, &run)
            .args(SMALL)
            .args(["--checkpoint-every", "3"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let due = || {
            if after_lines == 0 {
                // A checkpoint being written: its temporary folder exists.
                std::fs::read_dir(run.join("checkpoints")).is_ok_and(|mut d| {
                    d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
                })
            } else {
                std::fs::read_to_string(run.join("log.jsonl"))
                    .is_ok_and(|l| l.lines().count() >= after_lines)
            }
        };
        let mut hit = false;
        while t.elapsed() < Duration::from_secs(120) {
            if due() {
                hit = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(hit, "{name}: the moment to kill never came");
        assert!(running, "{name}: the run had finished before the kill");
        // The newest complete checkpoint loads.
        if let Ok(newest) = barlow::train::checkpoint::resolve(&run) {
            barlow::train::checkpoint::load_state(&newest)
                .unwrap_or_else(|e| panic!("{name}: newest checkpoint does not load: {e}"));
            assert!(newest.join("model.bin").is_file(), "{name}");
        }
        // Relaunched with the same command line and --resume (killed before
        // the first checkpoint, it starts again from step 0).
        ok(train_cmd(&data, &run)
            .args(SMALL)
            .args(["--checkpoint-every", "3", "--resume"])
            .output()
            .unwrap());
        let got = losses(&run);
        assert_eq!(got.len(), STEPS, "{name}: each step logged once");
        for ((s, a), (_, b)) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "{name}: step {s}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn two_data_parallel_peers_log_the_losses_of_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let run = |name: &str, extra: &[&str]| -> Vec<(u64, f64)> {
        let out = tmp.path().join(name);
        ok(train_cmd(&data, &out)
            .args(SMALL)
            .args(["--max-steps", "6"])
            .args(extra)
            .output()
            .unwrap());
        losses(&out)
    };
    let one = run("one", &["--peers", "1"]);
    let two = run("two", &["--peers", "2"]);
    assert_eq!(one.len(), 6);
    assert_same_losses(&two, &one, "2 peers");
    // Device ids are for GPU backends; a batch needs an image per peer.
    for (extra, says) in [
        (
            &["--peers", "2", "--device-ids", "0,1"][..],
            "--device-ids is for GPU",
        ),
        (&["--peers", "9"][..], "batch 8 over 9 peers"),
    ] {
        let out = train_cmd(&data, &tmp.path().join("bad"))
            .args(SMALL)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says) && err.lines().count() == 1, "{err}");
    }
}
