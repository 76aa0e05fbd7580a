use super::*;
use crate::backend::Cpu;
use crate::data::sampler::Position;
use crate::model::Arch;
use crate::optim::WarmupCosine;
use crate::prep::datasets::sample::{SampleOptions, make_sample};
use crate::prep::shardify::{Input, Layout, Options, shardify};
use crate::progress::Silent;
use burn::module::Module;
use std::time::Instant;

/// A tiny labelled dataset: `classes` x `per_class` train images.
fn tiny(dir: &Path, per_class: usize) -> Arc<Dataset> {
    let opts = SampleOptions {
        classes: 2,
        train_per_class: per_class,
        val_per_class: 1,
        min_side: 32,
        max_side: 40,
        ..SampleOptions::default()
    };
    make_sample(&dir.join("img"), &opts, 2, &Silent).unwrap();
    let input = Input::Folder {
        path: dir.join("img/train"),
        layout: Layout::ImageFolder,
    };
    shardify(&input, &dir.join("shards"), &Options::default(), &Silent).unwrap();
    Arc::new(Dataset::open(dir.join("shards")).unwrap())
}

fn small() -> TrainConfig {
    TrainConfig {
        arch: Arch::Resnet18,
        width: 8,
        small_stem: true,
        image_size: 16,
        batch_size: 8,
        epochs: 2,
        projector: vec![32, 32],
        threads: 2,
        log_every: 2,
        ..TrainConfig::default()
    }
}

/// `got`'s logged losses are `want`'s: same steps, within 1e-5 relative.
fn assert_same_losses(got: &TrainSummary, want: &TrainSummary, what: &str) {
    assert_eq!(got.losses.len(), want.losses.len(), "{what}");
    for ((s, a), (t, b)) in got.losses.iter().zip(&want.losses) {
        assert_eq!(s, t, "{what}");
        assert!(
            (a - b).abs() <= 1e-5 * b.abs(),
            "{what}, step {s}: {a} vs {b}"
        );
    }
}

#[test]
fn a_short_cpu_run_logs_checkpoints_and_saves_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let cfg = small();
    let run = RunOptions::new(tmp.path().join("run"));
    let (_, summary) = train::<Cpu>(ds, &cfg, &run, &Default::default(), &Silent).unwrap();
    assert_eq!(summary.steps, 6); // 24 records / 8 = 3 steps an epoch
    assert!(summary.losses.iter().all(|(_, l)| l.is_finite()));
    assert!((0.0..=1.0).contains(&summary.data_wait_share));
    let log = std::fs::read_to_string(run.out.join("log.jsonl")).unwrap();
    let lines: Vec<StepLog> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Step 0, then every second step.
    let steps: Vec<u64> = lines.iter().map(|l| l.step).collect();
    assert_eq!(steps, vec![0, 1, 3, 5]);
    // Losses left the device at the log points (steps 0, 1, 3 and 5)
    // and before the checkpoint after step 2: five reads for six steps;
    // the checkpoint after step 5 found nothing left to read.
    let read_steps: Vec<u64> = summary.loss_reads.iter().map(|r| r.step).collect();
    assert_eq!(read_steps, vec![0, 1, 2, 3, 5]);
    // Each read came after the next batch's upload (none after the last step).
    let uploaded: Vec<u64> = summary
        .loss_reads
        .iter()
        .map(|r| r.batches_uploaded)
        .collect();
    assert_eq!(uploaded, vec![2, 3, 4, 5, 6]);
    assert_eq!(lines[3].epoch, 1);
    let logged: Vec<(u64, f32)> = lines.iter().map(|l| (l.step, l.loss)).collect();
    assert_eq!(summary.losses, logged);
    // The logged rates are the schedule's for batch 8, 2 epochs of 3 steps
    // (too short for warm-up), and lr_b / lr_w = 0.0048 / 0.2.
    let schedule = WarmupCosine::reference(8, 2, 3, 0.2, 0.0048);
    for l in &lines {
        let (w, b) = schedule.rates(l.step);
        assert!((l.lr_weights - w).abs() < 1e-12 && (l.lr_biases - b).abs() < 1e-12);
        assert!((l.lr_biases / l.lr_weights - 0.024).abs() < 1e-9);
    }
    assert!(lines[0].lr_weights > lines[3].lr_weights, "cosine decay");
    // A checkpoint per epoch (the newest two kept), the last one at the end.
    assert_eq!(checkpoint::list(&run.out).unwrap(), vec![3, 6]);
    let state = checkpoint::load_state(&summary.checkpoint).unwrap();
    assert_eq!(state.step, 6);
    assert_eq!(state.position, Position { epoch: 2, batch: 0 });
    // The checkpoint's state does not grow with the run.
    let json = std::fs::read_to_string(summary.checkpoint.join("state.json")).unwrap();
    assert!(!json.contains("losses"), "{json}");
    assert!(summary.backbone.is_file());
    assert!(image::open(run.out.join("loss.png")).is_ok());
}

#[test]
fn a_loader_worker_panic_stops_training_with_an_error_naming_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let run = RunOptions {
        panic_on_record: Some(5),
        ..RunOptions::new(tmp.path().join("run"))
    };
    match train::<Cpu>(ds, &small(), &run, &Default::default(), &Silent) {
        Err(TrainError::Loader(LoaderError::WorkerPanic { record: 5, at, .. })) => {
            assert!(at.contains(".bshard"), "{at}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("training went on past a worker panic"),
    }
}

#[test]
fn data_parallel_peers_log_the_single_device_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let cfg = TrainConfig {
        max_steps: Some(6),
        log_every: 1,
        ..small()
    };
    let run = |cfg: &TrainConfig, name: &str, peers: usize| {
        let run = RunOptions::new(tmp.path().join(name));
        let devices = vec![Default::default(); peers];
        train_on::<Cpu>(ds.clone(), cfg, &run, &devices, &Silent)
            .unwrap()
            .1
    };
    let one = run(&cfg, "one", 1);
    assert_eq!(one.losses.len(), 6);
    // 8 images over 3 peers: slices of 2, 3 and 3.
    for peers in [2, 3] {
        let got = run(&cfg, &format!("peers{peers}"), peers);
        assert_eq!(got.steps, 6);
        assert_same_losses(&got, &one, &format!("{peers} peers"));
    }
    // The divisor changes the trajectory (same first loss, then not),
    // the same way on one device and on two.
    let divided = TrainConfig {
        grad_divisor: 32.0,
        ..cfg.clone()
    };
    let d = run(&divided, "divided1", 1);
    assert_same_losses(&run(&divided, "divided2", 2), &d, "divided, 2 peers");
    let gap = |k: usize| ((d.losses[k].1 - one.losses[k].1) / one.losses[k].1).abs();
    assert!(
        gap(0) <= 1e-5 && gap(5) > 1e-3,
        "{:?} vs {:?}",
        d.losses,
        one.losses
    );
}

/// The log lines of a run folder.
fn step_logs(run: &Path) -> Vec<StepLog> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn peers_log_their_all_reduce_traffic_as_counted_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let cfg = TrainConfig {
        max_steps: Some(5),
        ..small()
    };
    let run = RunOptions::new(tmp.path().join("two"));
    let devices = vec![Default::default(); 2];
    let (model, _) = train_on::<Cpu>(ds.clone(), &cfg, &run, &devices, &Silent).unwrap();
    // small(): ResNet-18 of width w = 8 and a 32-32 projector. Its
    // BatchNorms: the stem's (w channels), layer1's four (w), then five in
    // each of layers 2-4 (two per block and the downsample's: 2w, 4w, 8w),
    // and the projector's hidden one (32): 21 layers, 632 channels.
    let w = 8;
    let bn_layers = 1 + 4 + 5 + 5 + 5 + 1;
    let bn_channels = w + 4 * w + 5 * 2 * w + 5 * 4 * w + 5 * 8 * w + 32;
    assert_eq!((bn_layers, bn_channels), (21, 632));
    // Each BatchNorm sums its mean and its variance for each view, forward
    // and backward. The loss standardises each view's D = 32 embeddings
    // the same way (2 sums of D per view) and sums the cross-correlation
    // with its diagonal (D * D + D) once, forward and backward. Then one
    // sum of every gradient, with the stop vote.
    let d = 32;
    let forward_calls = 2 * 2 * bn_layers + 2 * 2 + 1;
    let forward_values = 2 * 2 * bn_channels + 2 * 2 * d + d * d + d;
    // burn's count includes the BatchNorms' running means and variances,
    // which have no gradient.
    let params = model.num_params() - 2 * bn_channels;
    let calls = 2 * forward_calls + 1;
    let values = 2 * forward_values + params + 1;
    assert_eq!(calls, 179);
    let lines = step_logs(&run.out);
    // Steps 0, 1, 3 and the last, 4: windows of 1, 1, 2 and 1 steps.
    assert_eq!(
        lines.iter().map(|l| l.step).collect::<Vec<_>>(),
        [0, 1, 3, 4]
    );
    for l in &lines {
        let t = l.peers.expect("a run on two peers logs their traffic");
        assert_eq!(t.collectives, calls as u64, "step {}", l.step);
        assert_eq!(t.values, values as u64, "step {}", l.step);
        assert_eq!(t.sent_bytes, 8 * values as u64, "step {}", l.step);
        // Every sum reads its tensor back; the stop vote is read once more.
        assert_eq!(t.round_trips, calls as u64 + 1, "step {}", l.step);
        assert!(t.seconds > 0.0 && t.seconds.is_finite(), "{t:?}");
    }
    // On one device nothing is summed and the lines are as they were.
    let one = RunOptions::new(tmp.path().join("one"));
    train::<Cpu>(ds, &cfg, &one, &Default::default(), &Silent).unwrap();
    assert!(step_logs(&one.out).iter().all(|l| l.peers.is_none()));
    let text = std::fs::read_to_string(one.out.join("log.jsonl")).unwrap();
    assert!(!text.contains("peers"), "{text}");
}

#[test]
fn damaged_records_are_skipped_logged_and_named_or_stop_the_run() {
    use crate::data::loader::{DamagedRecord, MaxDamaged, OnDamaged};
    use crate::run::DamagedLog;
    let tmp = tempfile::tempdir().unwrap();
    drop(tiny(tmp.path(), 12));
    // A bit flipped inside records 2 and 9 (the index stays valid).
    let dir = tmp.path().join("shards");
    let ds = Dataset::open(&dir).unwrap();
    assert_eq!(ds.shards().len(), 1);
    let shard = ds.shards()[0].path().to_path_buf();
    let offsets: Vec<u64> = [2, 9].map(|r| ds.record(r).unwrap().meta.offset).to_vec();
    drop(ds);
    let mut bytes = std::fs::read(&shard).unwrap();
    for o in &offsets {
        bytes[*o as usize + 30] ^= 0x04;
    }
    std::fs::write(&shard, &bytes).unwrap();
    let ds = Arc::new(Dataset::open(&dir).unwrap());
    let cfg = TrainConfig {
        max_steps: Some(6),
        log_every: 1,
        ..small()
    };
    let run = |name: &str, on_damaged| {
        let run = RunOptions {
            on_damaged,
            max_damaged: MaxDamaged::Count(2),
            ..RunOptions::new(tmp.path().join(name))
        };
        let dev = Default::default();
        (train::<Cpu>(ds.clone(), &cfg, &run, &dev, &Silent), run.out)
    };
    let (a, out) = run("a", OnDamaged::Skip);
    let a = a.unwrap().1;
    let (b, _) = run("b", OnDamaged::Skip);
    assert_same_losses(&b.unwrap().1, &a, "a rerun");
    // Two epochs of 3 steps: each damaged record met at least once an epoch.
    assert!(a.damaged_records >= 4, "{}", a.damaged_records);
    let logged: u64 = step_logs(&out).iter().map(|l| l.damaged_records).sum();
    assert_eq!(logged, a.damaged_records);
    let listed: Vec<DamagedLog> = std::fs::read_to_string(out.join("damaged.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len() as u64, a.damaged_records);
    for l in &listed {
        let i = [2, 9].iter().position(|&r| r == l.record.record).unwrap();
        let want = DamagedRecord {
            record: l.record.record,
            shard: shard.clone(),
            shard_record: l.record.record,
            offset: offsets[i],
        };
        assert_eq!(l.record, want);
    }
    // Under `stop` the first damaged record met ends the run, named.
    match run("c", OnDamaged::Stop).0 {
        Err(TrainError::Loader(e)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("shard-00000") && msg.contains("checksum"),
                "{msg}"
            );
        }
        other => panic!(
            "expected a damaged record's error, got {:?}",
            other.map(|r| r.1.steps)
        ),
    }
}

#[test]
fn a_non_finite_loss_rewinds_to_the_last_checkpoint_past_its_batches() {
    use crate::run::RewindLog;
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12); // 24 images: 3 batches of 8 an epoch
    let cfg = TrainConfig {
        epochs: 4,
        max_steps: Some(9),
        log_every: 1,
        ..small()
    };
    // Step 5 trains on the batch at epoch 1, batch 2: its loss made NaN.
    let poison = vec![Position { epoch: 1, batch: 2 }];
    let options = |name: &str, on_nonfinite, max_rewinds| RunOptions {
        checkpoint_every: Some(2),
        on_nonfinite,
        rewind_skip: 1,
        max_rewinds,
        poison_batches: poison.clone(),
        ..RunOptions::new(tmp.path().join(name))
    };
    let dev = Default::default();
    let go = |run: &RunOptions| train::<Cpu>(ds.clone(), &cfg, run, &dev, &Silent);
    let rewinding = options("a", OnNonFinite::Rewind, 3);
    let (_, a) = go(&rewinding).unwrap();
    assert_eq!((a.steps, a.rewinds.clone()), (9, vec![5]));
    // Back to the checkpoint of step 4 (written every 2 steps), past the
    // batches of steps 4 and 5 and one more: step 4 again on epoch 2's
    // second batch.
    let lines = step_logs(&rewinding.out);
    assert_eq!(
        lines.iter().map(|l| l.step).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert!(lines.iter().all(|l| l.loss.is_finite()));
    assert_eq!((lines[3].epoch, lines[4].epoch), (1, 2));
    let rewinds = |run: &RunOptions| -> Vec<RewindLog> {
        std::fs::read_to_string(run.out.join("rewinds.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let want = RewindLog {
        step: 5,
        loss: "NaN".into(),
        rewind: 1,
        back_to_step: 4,
        skipped_batches: 3,
        resumes_at: Position { epoch: 2, batch: 1 },
    };
    assert_eq!(rewinds(&rewinding), [want]);
    // The steps before the rewind are the run's without the poison.
    let clean = RunOptions {
        poison_batches: Vec::new(),
        ..options("clean", OnNonFinite::Stop, 0)
    };
    let (_, c) = go(&clean).unwrap();
    let within = |x: f32, y: f32| (x - y).abs() <= 1e-5 * y.abs();
    assert!(
        a.losses[..4]
            .iter()
            .zip(&c.losses[..4])
            .all(|(x, y)| x.0 == y.0 && within(x.1, y.1))
    );
    assert!(
        !within(a.losses[4].1, c.losses[4].1),
        "step 4 trained on another batch"
    );
    // A second bad batch before the next checkpoint (step 4 again, now on
    // epoch 2's second batch) goes back to the same checkpoint, past that
    // batch too: steps 4 on take epoch 3's.
    let twice = RunOptions {
        poison_batches: vec![
            Position { epoch: 1, batch: 2 },
            Position { epoch: 2, batch: 1 },
        ],
        ..options("twice", OnNonFinite::Rewind, 3)
    };
    let (_, t) = go(&twice).unwrap();
    assert_eq!((t.steps, t.rewinds.clone()), (9, vec![5, 4]));
    let second = RewindLog {
        step: 4,
        loss: "NaN".into(),
        rewind: 2,
        back_to_step: 4,
        skipped_batches: 5,
        resumes_at: Position { epoch: 3, batch: 0 },
    };
    assert_eq!(rewinds(&twice)[1], second);
    assert_eq!(step_logs(&twice.out)[4].epoch, 3);
    // A rerun rewinds the same way.
    let again = options("b", OnNonFinite::Rewind, 3);
    let (_, b) = go(&again).unwrap();
    assert_same_losses(&b, &a, "a rerun");
    assert_eq!(rewinds(&again), rewinds(&rewinding));
    // Under `stop` the run stops at step 5; past the rewind limit too.
    match go(&options("stop", OnNonFinite::Stop, 3)) {
        Err(TrainError::NonFinite(v, 5)) => assert!(v.is_nan()),
        other => panic!("expected NaN at step 5, got {:?}", other.map(|r| r.1.steps)),
    }
    match go(&options("limit", OnNonFinite::Rewind, 0)) {
        Err(e @ TrainError::TooManyRewinds { step: 5, .. }) => {
            assert!(e.to_string().contains("--max-rewinds"), "{e}")
        }
        other => panic!(
            "expected the rewind limit, got {:?}",
            other.map(|r| r.1.steps)
        ),
    }
    // Several peers cannot rewind (yet): refused before the first step.
    let two = vec![Default::default(); 2];
    let peers = options("peers", OnNonFinite::Rewind, 3);
    match train_on::<Cpu>(ds.clone(), &cfg, &peers, &two, &Silent) {
        Err(TrainError::RewindNeedsOneDevice { peers: 2 }) => {}
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.1.steps)),
    }
}

#[test]
fn processes_train_as_one_and_refuse_to_start_unlike() {
    use crate::peers::threads::Threads;
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let cfg = TrainConfig {
        max_steps: Some(3),
        log_every: 1,
        ..small()
    };
    let one = RunOptions::new(tmp.path().join("one"));
    let (_, one) = train::<Cpu>(ds.clone(), &cfg, &one, &Default::default(), &Silent).unwrap();
    // Two processes (threads standing in for MPI), one config each.
    let across = |name: &str, cfgs: [&TrainConfig; 2]| {
        let out = tmp.path().join(name);
        std::thread::scope(|s| {
            let handles: Vec<_> = Threads::group(2)
                .into_iter()
                .zip(cfgs)
                .map(|(p, cfg)| {
                    let run = RunOptions {
                        processes: Some(p),
                        ..RunOptions::new(&out)
                    };
                    let ds = ds.clone();
                    s.spawn(move || {
                        train_on::<Cpu>(ds, cfg, &run, &[Default::default()], &Silent)
                            .map(|(_, summary)| summary)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    let alike = across("alike", [&cfg, &cfg]);
    match &alike[..] {
        [Ok(got), Ok(_)] => assert_same_losses(got, &one, "2 processes"),
        other => panic!(
            "{:?}",
            other.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
        ),
    }
    // Process 1 with another seed: both refuse before the first step,
    // each naming the seed, and nothing is written.
    let other = TrainConfig {
        seed: cfg.seed + 1,
        ..cfg.clone()
    };
    for (rank, r) in across("unlike", [&cfg, &other]).into_iter().enumerate() {
        match r {
            Err(TrainError::Peer(PeerError::Disagree { process, facts, .. })) => {
                assert_eq!(process, rank);
                assert!(facts.contains("config seed (here: "), "{facts}");
                assert!(facts.contains("starting weights"), "{facts}");
                assert!(!facts.contains("dataset"), "{facts}");
            }
            Err(e) => panic!("process {rank}: {e}"),
            Ok(_) => panic!("process {rank} trained with another seed beside it"),
        }
    }
    assert!(!tmp.path().join("unlike").exists());
}

#[test]
fn a_data_parallel_run_resumes_with_another_number_of_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let cfg = TrainConfig {
        max_steps: Some(6),
        log_every: 1,
        ..small()
    };
    let dev = Default::default();
    let full = RunOptions::new(tmp.path().join("full"));
    let (_, want) = train_on::<Cpu>(ds.clone(), &cfg, &full, &[dev], &Silent).unwrap();
    let part = RunOptions {
        checkpoint_every: Some(2),
        ..RunOptions::new(tmp.path().join("part"))
    };
    let first = TrainConfig {
        max_steps: Some(4),
        ..cfg.clone()
    };
    train_on::<Cpu>(ds.clone(), &first, &part, &[dev, dev], &Silent).unwrap();
    let resumed = RunOptions {
        resume: true,
        ..part
    };
    let (_, got) = train_on::<Cpu>(ds, &cfg, &resumed, &[dev, dev, dev], &Silent).unwrap();
    assert_eq!((got.start_step, got.steps), (4, 6));
    assert_same_losses(&got, &want, "2 peers resumed on 3");
}

#[test]
fn a_failing_peer_stops_the_run_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let cfg = TrainConfig {
        max_steps: Some(6),
        ..small()
    };
    let dev = Default::default();
    for (fault, says) in [
        (PeerFault::Error, "failed on purpose before step 2"),
        (PeerFault::Panic, "its thread panicked"),
    ] {
        let run = RunOptions {
            fail_peer_at: Some((2, fault)),
            ..RunOptions::new(tmp.path().join(format!("{fault:?}")))
        };
        let started = Instant::now();
        match train_on::<Cpu>(ds.clone(), &cfg, &run, &[dev, dev], &Silent) {
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("peer 1 of 2 failed: ") && e.contains(says),
                    "{e}"
                )
            }
            Ok((_, s)) => panic!("the run went on for {} steps", s.steps),
        }
        assert!(
            started.elapsed() < run.peer_timeout,
            "it waited for the timeout"
        );
    }
    let small_batch = TrainConfig {
        batch_size: 2,
        ..cfg
    };
    let run = RunOptions::new(tmp.path().join("too-many"));
    match train_on::<Cpu>(ds, &small_batch, &run, &[dev, dev, dev], &Silent) {
        Err(TrainError::BatchTooSmall { batch: 2, peers: 3 }) => {}
        other => panic!("expected BatchTooSmall, got {:?}", other.map(|r| r.1.steps)),
    }
}

#[test]
fn a_resumed_run_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 12);
    let cfg = TrainConfig {
        epochs: 3,
        ..small()
    };
    let dev = Default::default();
    let full = RunOptions::new(tmp.path().join("full"));
    let (_, want) = train::<Cpu>(ds.clone(), &cfg, &full, &dev, &Silent).unwrap();
    // Stop after 4 steps (checkpoints every 2: the last one is at step 4,
    // mid-epoch), then resume with a different thread count.
    let part = RunOptions {
        checkpoint_every: Some(2),
        ..RunOptions::new(tmp.path().join("part"))
    };
    let stopped = TrainConfig {
        max_steps: Some(4),
        ..cfg.clone()
    };
    train::<Cpu>(ds.clone(), &stopped, &part, &dev, &Silent).unwrap();
    let resumed = RunOptions {
        resume: true,
        ..part.clone()
    };
    let cfg3 = TrainConfig {
        threads: 3,
        ..cfg.clone()
    };
    let (_, got) = train::<Cpu>(ds.clone(), &cfg3, &resumed, &dev, &Silent).unwrap();
    assert_eq!(got.start_step, 4);
    assert_eq!(got.steps, 9);
    // Steps 0, 1, 3, 5, 7 and the last, 8: the earlier ones read back
    // from the log the stopped run wrote.
    assert_eq!(got.losses.len(), 6);
    assert_same_losses(&got, &want, "resumed");
    // The log holds each step once, as the uninterrupted run's does.
    let steps = |p: &Path| -> Vec<u64> {
        std::fs::read_to_string(p.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<StepLog>(l).unwrap().step)
            .collect()
    };
    assert_eq!(steps(&part.out), steps(&full.out));
    // A different trajectory is refused, naming what differs.
    let other = TrainConfig {
        lambda: 0.01,
        ..cfg.clone()
    };
    match train::<Cpu>(ds, &other, &resumed, &dev, &Silent) {
        Err(TrainError::ResumeMismatch { differs, .. }) => {
            assert!(differs.contains("lambda"), "{differs}")
        }
        other => panic!("expected a mismatch, got {:?}", other.map(|r| r.1.steps)),
    }
}

#[test]
fn a_run_of_zero_steps_saves_its_initial_network() {
    use crate::model::torchvision::export;
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny(tmp.path(), 4);
    let cfg = TrainConfig {
        max_steps: Some(0),
        ..small()
    };
    let run = RunOptions::new(tmp.path().join("run"));
    let dev = Default::default();
    let (_, s) = train::<Cpu>(ds, &cfg, &run, &dev, &Silent).unwrap();
    assert_eq!(s.steps, 0);
    assert_eq!(checkpoint::list(&run.out).unwrap(), vec![0]);
    let saved = checkpoint::load_model(
        &s.checkpoint,
        BarlowTwins::<Cpu>::new(&cfg.backbone(), &cfg.projector, &dev),
        &dev,
    )
    .unwrap();
    let seeded = initial_model::<Cpu>(&cfg, None, &dev).unwrap();
    let bytes = |m: &BarlowTwins<Cpu>| export(&m.backbone, &cfg.backbone(), None).unwrap();
    assert_eq!(bytes(&saved), bytes(&seeded));
}

#[test]
fn a_run_initialised_from_a_file_starts_from_its_weights() {
    use crate::model::torchvision::export;
    let tmp = tempfile::tempdir().unwrap();
    let dev = Default::default();
    let cfg = small();
    let other = TrainConfig { seed: 9, ..small() };
    let source = initial_model::<Cpu>(&other, None, &dev).unwrap();
    let bytes =
        |m: &BarlowTwins<Cpu>| export(&m.backbone, &cfg.backbone(), Some(&m.projector)).unwrap();
    let file = tmp.path().join("w.safetensors");
    std::fs::write(&file, bytes(&source)).unwrap();
    let seeded = initial_model::<Cpu>(&cfg, None, &dev).unwrap();
    let init = initial_model::<Cpu>(&cfg, Some(&file), &dev).unwrap();
    assert_ne!(bytes(&seeded), bytes(&source));
    assert_eq!(bytes(&init), bytes(&source));
    // Parameters stay trainable.
    assert!(init.backbone.conv1.weight.val().is_require_grad());
    // A backbone-only file keeps the seeded projector.
    std::fs::write(
        &file,
        export(&source.backbone, &cfg.backbone(), None).unwrap(),
    )
    .unwrap();
    let init = initial_model::<Cpu>(&cfg, Some(&file), &dev).unwrap();
    let projector = |m: &BarlowTwins<Cpu>| -> Vec<f32> {
        m.projector.linears[0]
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap()
    };
    assert_eq!(projector(&init), projector(&seeded));
    // So does a file whose projector has other widths.
    let narrow = TrainConfig {
        projector: vec![16, 16],
        ..other.clone()
    };
    let source = initial_model::<Cpu>(&narrow, None, &dev).unwrap();
    let file16 = tmp.path().join("p16.safetensors");
    let with16 = export(&source.backbone, &cfg.backbone(), Some(&source.projector)).unwrap();
    std::fs::write(&file16, with16).unwrap();
    let init = initial_model::<Cpu>(&cfg, Some(&file16), &dev).unwrap();
    assert_eq!(projector(&init), projector(&seeded));
    let backbone = |m: &BarlowTwins<Cpu>| export(&m.backbone, &cfg.backbone(), None).unwrap();
    assert_eq!(backbone(&init), backbone(&source));
    // A file for another network is refused, naming the keys.
    let wide = TrainConfig {
        width: 16,
        ..small()
    };
    match initial_model::<Cpu>(&wide, Some(&file), &dev) {
        Err(TrainError::Interop(e)) => assert!(e.to_string().contains("conv1.weight"), "{e}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a width-8 file initialised a width-16 network"),
    }
}
