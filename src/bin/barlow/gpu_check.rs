//! `barlow gpu-check`: the device checks of `barlow::backend::check` on a
//! user's GPU, as a table and `OUT/gpu-check.json`.

use std::path::PathBuf;
use std::time::Instant;

use barlow::backend::check::{self, CheckError};
use barlow::backend::{BackendChoice, BackendKind};
use burn::tensor::backend::AutodiffBackend;
use serde_json::{Value, json};

/// `barlow gpu-check`'s flags.
#[derive(clap::Args, Debug)]
pub struct GpuCheckArgs {
    /// cuda or vulkan [default: CUDA where usable, else a hardware Vulkan GPU].
    #[arg(long, value_parser = crate::choice::<BackendKind>())]
    backend: Option<BackendKind>,
    /// Device index (CUDA's numbering, or the Vulkan adapters' order).
    #[arg(long, default_value_t = 0, requires = "backend")]
    device: usize,
    /// Let --backend vulkan use a software adapter (Mesa's lavapipe).
    #[arg(long, requires = "backend")]
    allow_software: bool,
    /// Folder for the check's sample data, checkpoints and gpu-check.json.
    #[arg(long, default_value = "gpu-check")]
    out: PathBuf,
    /// Rehearse on a machine without a GPU: the CPU backend checked against
    /// itself. Every check runs and must pass (the CPU agrees with itself
    /// exactly); it proves the command, not a device.
    #[arg(long, conflicts_with_all = ["backend", "device", "allow_software"])]
    dry_run: bool,
}

/// One check's line: its name, what it measured, what failed.
struct Outcome {
    name: &'static str,
    measured: Value,
    problems: Vec<String>,
    seconds: f64,
}

fn run_checks<B: AutodiffBackend + barlow::peers::PeerReduce>(
    out: &std::path::Path,
    device: &B::Device,
) -> Result<Vec<Outcome>, CheckError> {
    let mut outcomes = Vec::new();
    let mut record = |name, measured: Value, problems: Vec<String>, t: Instant| {
        let seconds = t.elapsed().as_secs_f64();
        println!(
            "{:<24} {:>7.1}s  {}",
            name,
            seconds,
            if problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED: {}", problems.join("; "))
            }
        );
        outcomes.push(Outcome {
            name,
            measured,
            problems,
            seconds,
        });
    };
    let t = Instant::now();
    let dtypes = check::dtypes::<B>(device);
    let missing: Vec<String> = dtypes
        .iter()
        .filter(|(n, ok)| !ok && (n == "f32" || n == "u8"))
        .map(|(n, _)| format!("{n} is not supported"))
        .collect();
    let unusable = !missing.is_empty();
    record("dtypes", json!(dtypes), missing, t);
    if unusable {
        return Ok(outcomes);
    }
    let t = Instant::now();
    let u = check::upload::<B>(device);
    record("u8 upload", json!(u), u.problems(), t);
    let t = Instant::now();
    let a = check::agreement::<B>(device, 3);
    record("3 steps vs the CPU", json!(a), a.problems(), t);
    let t = Instant::now();
    let m = check::mixed_precision::<B>(device, 3);
    let name = if m.bf16 {
        "3 bf16 steps vs the CPU"
    } else {
        "bf16 (not on this device)"
    };
    record(name, json!(m), m.problems(), t);
    let t = Instant::now();
    let c = check::checkpoint_cross_load::<B>(&out.join("checkpoints"), device)?;
    record("checkpoint cross-load", json!(c), c.problems(), t);
    let t = Instant::now();
    let ds = check::sample_dataset(&out.join("data"), 192)?;
    let f = check::feed_path::<B>(ds, &out.join("run"), 8, 3, device)?;
    record("feed path", json!(f), f.problems(), t);
    Ok(outcomes)
}

pub fn run(a: GpuCheckArgs) -> Result<(), String> {
    let choice = match a.backend {
        _ if a.dry_run => BackendChoice::cpu(),
        Some(BackendKind::Cpu) => {
            return Err(
                "gpu-check compares a GPU backend with the CPU: pass --backend cuda or vulkan"
                    .into(),
            );
        }
        Some(kind) => BackendChoice {
            kind,
            device: a.device,
            allow_software: barlow::backend::software_allowed(a.allow_software),
        },
        None => match BackendChoice::auto() {
            c if c.kind == BackendKind::Cpu => {
                return Err(
                    "no usable GPU here (CUDA or hardware Vulkan); pass --backend to see why"
                        .into(),
                );
            }
            c => c,
        },
    };
    choice.check().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    println!(
        "checking {} against the CPU backend (tolerances in barlow::backend::check)",
        choice.describe()
    );
    let outcomes = barlow::with_backend!(choice, |B, device| run_checks::<B>(&a.out, &device))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.problems.is_empty())
        .map(|o| o.name)
        .collect();
    let report = json!({
        "backend": choice.describe(),
        "passed": failed.is_empty(),
        "checks": outcomes.iter().map(|o| json!({
            "name": o.name,
            "seconds": o.seconds,
            "problems": o.problems,
            "measured": o.measured,
        })).collect::<Vec<_>>(),
    });
    let path = a.out.join("gpu-check.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    barlow::fs::write_atomically(&path, text.as_bytes()).map_err(|e| e.to_string())?;
    println!("wrote {}", path.display());
    println!("{}", json!({"passed": failed.is_empty(), "failed": failed}));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        ))
    }
}
