//! The device backend's code path against the CPU's (`barlow::backend::check`).
//!
//! Built with `--features vulkan` (or `cuda`), these run on the device
//! `BARLOW_TEST_BACKEND` names (`vulkan` or `cuda`; default: the first one
//! compiled in). CI runs them on Mesa's software Vulkan device
//! (`BARLOW_ALLOW_SOFTWARE_DEVICE=1`). With a device feature on and no
//! device present they fail: asking for the device tests is asking for a
//! device.
#![cfg(any(feature = "vulkan", feature = "cuda"))]

use barlow::backend::check::{self, Agreement};
use barlow::backend::{BackendChoice, BackendKind};
use barlow::with_backend;

fn device() -> BackendChoice {
    let kind = match std::env::var("BARLOW_TEST_BACKEND").as_deref() {
        Ok("cuda") => BackendKind::Cuda,
        Ok("vulkan") => BackendKind::Vulkan,
        Ok(other) => panic!("BARLOW_TEST_BACKEND={other}: expected cuda or vulkan"),
        Err(_) if cfg!(feature = "vulkan") => BackendKind::Vulkan,
        Err(_) => BackendKind::Cuda,
    };
    let choice = BackendChoice {
        kind,
        allow_software: barlow::backend::software_allowed(false),
        ..BackendChoice::cpu()
    };
    if let Err(e) = choice.check() {
        panic!("the device tests need a device: {e}");
    }
    choice
}

#[test]
fn three_training_steps_agree_with_the_cpu() {
    let a: Agreement = with_backend!(device(), |B, d| check::agreement::<B>(&d, 3)).unwrap();
    eprintln!(
        "losses cpu {:?} device {:?}; relative differences: loss {:.2e}, gradient norms {:.2e}, weights {:.2e}",
        a.cpu_losses, a.device_losses, a.loss_rel, a.grad_norm_rel, a.weight_rel
    );
    assert!(a.problems().is_empty(), "{:?}", a.problems());
    // The losses moved: three steps of real training, not a constant.
    assert!(a.cpu_losses.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn pixels_arrive_as_u8_and_normalise_to_the_cpu_loader_bits() {
    let u = with_backend!(device(), |B, d| check::upload::<B>(&d)).unwrap();
    assert!(u.problems().is_empty(), "{:?}", u.problems());
}

#[test]
fn losses_leave_the_device_only_at_log_points_after_the_next_upload() {
    let tmp = tempfile::tempdir().unwrap();
    // 192 records: 12 batches of 16, more than the 8 steps.
    let ds = check::sample_dataset(&tmp.path().join("data"), 192).unwrap();
    let f = with_backend!(device(), |B, d| check::feed_path::<B>(
        ds,
        &tmp.path().join("run"),
        8,
        3,
        &d
    ))
    .unwrap()
    .unwrap();
    // Steps 0, 2, 5 and 7 for 8 steps logged every 3.
    assert_eq!(f.expected.len(), 4);
    assert!(f.problems().is_empty(), "{:?}", f.problems());
}

#[test]
fn two_peers_on_the_device_log_the_losses_of_one_on_the_cpu() {
    use barlow::progress::Silent;
    use barlow::train::{self, RunOptions, TrainConfig};
    let tmp = tempfile::tempdir().unwrap();
    // 64 records: two steps of 32.
    let ds = check::sample_dataset(&tmp.path().join("data"), 64).unwrap();
    let cfg = TrainConfig {
        batch_size: 32,
        max_steps: Some(2),
        log_every: 1,
        ..check::network()
    };
    // Both peers on the one device, 16 images each (the other tests' batch,
    // whose kernels are compiled already): the differentiable sums of the
    // BatchNorm statistics and of C, through the device backend's autodiff,
    // against one peer on the CPU.
    let run = |name: &str| RunOptions::new(tmp.path().join(name));
    let cpu = train::train_on::<barlow::backend::Cpu>(
        ds.clone(),
        &cfg,
        &run("cpu"),
        &[Default::default()],
        &Silent,
    )
    .unwrap()
    .1
    .losses;
    let two = with_backend!(device(), |B, d| {
        let devices = vec![d; 2];
        train::train_on::<B>(ds.clone(), &cfg, &run("two"), &devices, &Silent)
            .unwrap()
            .1
            .losses
    })
    .unwrap();
    eprintln!("losses: 1 peer on the CPU {cpu:?}, 2 peers on the device {two:?}");
    assert_eq!(cpu.len(), 2);
    assert_eq!(cpu.len(), two.len());
    for ((s, a), (t, b)) in cpu.iter().zip(&two) {
        assert_eq!(s, t);
        let rel = f64::from((a - b).abs() / a.abs());
        assert!(rel <= check::LOSS_REL, "step {s}: {a} vs {b}");
    }
}

#[test]
fn checkpoints_move_between_the_cpu_and_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let c = with_backend!(device(), |B, d| check::checkpoint_cross_load::<B>(
        tmp.path(),
        &d
    ))
    .unwrap()
    .unwrap();
    eprintln!(
        "features relative difference: cpu -> device {:.2e}, device -> cpu {:.2e}",
        c.cpu_to_device, c.device_to_cpu
    );
    assert!(c.problems().is_empty(), "{:?}", c.problems());
}

#[test]
fn the_device_reports_its_dtypes() {
    let d = with_backend!(device(), |B, d| check::dtypes::<B>(&d)).unwrap();
    eprintln!("dtypes: {d:?}");
    // f32 and u8 are what training and the feed need.
    for need in ["f32", "u8"] {
        assert!(d.iter().any(|(n, ok)| n == need && *ok), "{need}: {d:?}");
    }
}

#[cfg(feature = "vulkan")]
#[test]
fn a_software_adapter_is_used_only_when_asked() {
    use barlow::backend::vulkan;
    let hardware = vulkan::adapters(false);
    assert!(hardware.iter().all(|a| !a.is_software()));
    let plain = BackendChoice {
        kind: BackendKind::Vulkan,
        ..BackendChoice::cpu()
    };
    if hardware.is_empty() {
        // The CI machine: lavapipe alone, refused without the flag, in one
        // sentence that names the way to allow it.
        assert!(vulkan::adapters(true).iter().any(|a| a.is_software()));
        let err = plain.check().unwrap_err().to_string();
        assert!(
            err.contains("--allow-software") && !err.contains('\n'),
            "{err}"
        );
        #[cfg(not(feature = "cuda"))]
        assert_eq!(BackendChoice::auto(), BackendChoice::cpu());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_barlow"))
            .args(["gpu-check", "--backend", "vulkan", "--out", "unused"])
            .env_remove(barlow::backend::ALLOW_SOFTWARE_ENV)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--allow-software") && err.lines().count() == 1,
            "{err}"
        );
    } else {
        assert!(plain.check().is_ok());
    }
}

/// `--device N` counts discrete GPUs, then integrated, then virtual ones;
/// the software adapter comes last and only when allowed.
#[cfg(feature = "vulkan")]
#[test]
fn vulkan_adapters_are_ordered_hardware_first() {
    use barlow::backend::vulkan::{Adapter, order};
    use burn::backend::wgpu::WgpuDevice;
    use wgpu::DeviceType as T;
    let listed = [
        ("llvmpipe".to_string(), T::Cpu),
        ("igpu".to_string(), T::IntegratedGpu),
        ("dgpu-a".to_string(), T::DiscreteGpu),
        ("dgpu-b".to_string(), T::DiscreteGpu),
    ];
    let names = |v: &[Adapter]| v.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
    let hw = order(&listed, false);
    assert_eq!(names(&hw), ["dgpu-a", "dgpu-b", "igpu"]);
    assert_eq!(hw[1].device, WgpuDevice::DiscreteGpu(1));
    assert_eq!(hw[2].device, WgpuDevice::IntegratedGpu(0));
    let all = order(&listed, true);
    assert_eq!(names(&all), ["dgpu-a", "dgpu-b", "igpu", "llvmpipe"]);
    assert!(all[3].is_software() && !all[0].is_software());
    assert!(order(&listed[..1], false).is_empty());
}

#[test]
fn mixed_precision_runs_where_the_device_has_bf16_and_is_refused_where_not() {
    use barlow::model::Precision;
    use barlow::progress::Silent;
    use barlow::train::{self, RunOptions, TrainConfig, TrainError};
    let m = with_backend!(device(), |B, d| check::mixed_precision::<B>(&d, 3)).unwrap();
    eprintln!("bf16 mixed precision: {m:?}");
    assert!(m.problems().is_empty(), "{:?}", m.problems());
    if m.bf16 {
        return;
    }
    // Without bf16 (lavapipe), a bf16 run is refused before its first step.
    let tmp = tempfile::tempdir().unwrap();
    let ds = check::sample_dataset(&tmp.path().join("data"), 16).unwrap();
    let cfg = TrainConfig {
        precision: Precision::Bf16,
        max_steps: Some(1),
        ..check::network()
    };
    let run = RunOptions::new(tmp.path().join("run"));
    let r = with_backend!(device(), |B, d| {
        train::train_on::<B>(ds, &cfg, &run, &[d], &Silent).map(drop)
    })
    .unwrap();
    assert!(
        matches!(r, Err(TrainError::PrecisionUnsupported(Precision::Bf16))),
        "{r:?}"
    );
}
