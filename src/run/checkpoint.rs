//! Checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! A checkpoint is a folder `RUN/checkpoints/step-<steps done, 10 digits>/`
//! holding `model.bin` (backbone + projector, BatchNorm running statistics
//! included), `optim.bin` (LARS momentum buffers) and `state.json` (steps
//! done, the loader position of the next batch, the run's config; the loss
//! history is the run's `log.jsonl`). The scheduler needs no state of its own: its rates are a pure
//! function of the step.
//!
//! Guarantees: a checkpoint appears complete or not at all. It is written
//! into `.step-<n>.tmp/`, every file is flushed to disk, then the folder is
//! renamed into place and the parent folder synced, so a crash at any moment
//! leaves the previous checkpoints intact. Folders that do not match the
//! name pattern are never read or removed.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use super::TrainConfig;
use crate::data::sampler::Position;
use crate::error::IoError;
use crate::model::BarlowTwins;

/// The folder, under a run folder, that holds its checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
const STATE: &str = "state.json";
const MODEL: &str = "model";
const OPTIM: &str = "optim";

type Rec = BinFileRecorder<FullPrecisionSettings>;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: {message}")]
    Record { path: PathBuf, message: String },
    #[error("{path}: not a checkpoint or a run folder with checkpoints")]
    NotFound { path: PathBuf },
}

/// What `state.json` holds: what resuming needs, nothing that grows with
/// the run (the loss history is in the run's `log.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Training steps done; the next step has this number.
    pub step: u64,
    /// Loader position of the next batch.
    pub position: Position,
    pub config: TrainConfig,
}

fn record_err(path: &Path) -> impl FnOnce(burn::record::RecorderError) -> CheckpointError + '_ {
    move |e| CheckpointError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn name(step: u64) -> String {
    format!("step-{step:010}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Writes a checkpoint of `model` and `optim` under `run/checkpoints/`,
/// atomically, and returns its folder.
pub fn save<B, O>(
    run: &Path,
    state: &CheckpointState,
    model: &BarlowTwins<B>,
    optim: &O,
) -> Result<PathBuf, CheckpointError>
where
    B: AutodiffBackend,
    O: Optimizer<BarlowTwins<B>, B>,
{
    let root = run.join(CHECKPOINTS);
    std::fs::create_dir_all(&root).map_err(IoError::at(&root))?;
    let final_dir = root.join(name(state.step));
    let tmp = crate::fs::temporary_name(&final_dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(IoError::at(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(IoError::at(&tmp))?;
    let rec = Rec::new();
    let model_path = tmp.join(MODEL);
    model
        .clone()
        .save_file(&model_path, &rec)
        .map_err(record_err(&model_path))?;
    let optim_path = tmp.join(OPTIM);
    Recorder::<B>::record(&rec, optim.to_record(), optim_path.clone())
        .map_err(record_err(&optim_path))?;
    let state_path = tmp.join(STATE);
    let json = serde_json::to_vec_pretty(state).map_err(|e| CheckpointError::Record {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&state_path, json).map_err(IoError::at(&state_path))?;
    for f in [
        model_path.with_extension("bin"),
        optim_path.with_extension("bin"),
        state_path,
    ] {
        crate::fs::sync(&f)?;
    }
    crate::fs::sync(&tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(IoError::at(&final_dir))?;
    }
    crate::fs::rename_durably(&tmp, &final_dir)?;
    Ok(final_dir)
}

/// Step numbers of the complete checkpoints under `run`, ascending.
pub fn list(run: &Path) -> Result<Vec<u64>, CheckpointError> {
    let root = run.join(CHECKPOINTS);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IoError::at(&root)(e).into()),
    };
    let mut steps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(IoError::at(&root))?;
        if let Some(step) = entry.file_name().to_str().and_then(parse_name)
            && entry.path().join(STATE).is_file()
        {
            steps.push(step);
        }
    }
    steps.sort_unstable();
    Ok(steps)
}

/// Resolves what a user passes as `--checkpoint`: a checkpoint folder, or a
/// run folder (meaning its latest checkpoint).
pub fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join(STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    match list(path)?.last() {
        Some(&step) => Ok(path.join(CHECKPOINTS).join(name(step))),
        None => Err(CheckpointError::NotFound {
            path: path.to_path_buf(),
        }),
    }
}

/// Removes all but the newest `keep` checkpoints of `run`.
pub fn prune(run: &Path, keep: usize) -> Result<(), CheckpointError> {
    let steps = list(run)?;
    for &step in &steps[..steps.len().saturating_sub(keep.max(1))] {
        let dir = run.join(CHECKPOINTS).join(name(step));
        std::fs::remove_dir_all(&dir).map_err(IoError::at(&dir))?;
    }
    Ok(())
}

pub fn load_state(dir: &Path) -> Result<CheckpointState, CheckpointError> {
    let path = dir.join(STATE);
    let bytes = std::fs::read(&path).map_err(IoError::at(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Record {
        path,
        message: e.to_string(),
    })
}

/// Loads the checkpoint's weights into `model` (built with the same config).
pub fn load_model<B: Backend>(
    dir: &Path,
    model: BarlowTwins<B>,
    device: &B::Device,
) -> Result<BarlowTwins<B>, CheckpointError> {
    let path = dir.join(MODEL);
    model
        .load_file(&path, &Rec::new(), device)
        .map_err(record_err(&path))
}

/// Loads the checkpoint's optimiser state into `optim` (after the model:
/// the state is keyed by the parameter ids the model record restores).
pub fn load_optim<B, O>(dir: &Path, optim: O, device: &B::Device) -> Result<O, CheckpointError>
where
    B: AutodiffBackend,
    O: Optimizer<BarlowTwins<B>, B>,
{
    let path = dir.join(OPTIM);
    let record =
        Recorder::<B>::load(&Rec::new(), path.clone(), device).map_err(record_err(&path))?;
    Ok(optim.load_record(record))
}

/// Saves the backbone alone (`path` gets the `.bin` extension).
pub fn save_backbone<B: Backend>(
    path: &Path,
    model: &BarlowTwins<B>,
) -> Result<PathBuf, CheckpointError> {
    // Written under a temporary name, synced and renamed: a crash leaves
    // the previous backbone.bin or the new one, never a torn file.
    let target = path.with_extension("bin");
    let tmp = crate::fs::temporary_name(&target);
    let rec = Rec::new();
    model
        .backbone
        .clone()
        .save_file(&tmp, &rec)
        .map_err(record_err(&target))?;
    // The recorder names the file itself: `tmp` with its extension set.
    let written = tmp.with_extension("bin");
    crate::fs::sync(&written)?;
    crate::fs::rename_durably(&written, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_names_count_as_checkpoints() {
        assert_eq!(parse_name("step-0000000012"), Some(12));
        assert_eq!(parse_name("step-12"), None);
        assert_eq!(parse_name(".step-0000000012.tmp"), None);
        assert_eq!(parse_name("step-00000000x2"), None);
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(CHECKPOINTS);
        for n in ["step-0000000004", "step-0000000010", "step-0000000002"] {
            std::fs::create_dir_all(root.join(n)).unwrap();
            std::fs::write(root.join(n).join(STATE), "{}").unwrap();
        }
        // Incomplete (no state.json) and foreign folders are ignored.
        std::fs::create_dir_all(root.join("step-0000000099")).unwrap();
        std::fs::create_dir_all(root.join(".step-0000000011.tmp")).unwrap();
        std::fs::create_dir_all(root.join("mine")).unwrap();
        assert_eq!(list(tmp.path()).unwrap(), vec![2, 4, 10]);
        assert_eq!(resolve(tmp.path()).unwrap(), root.join("step-0000000010"));
        prune(tmp.path(), 2).unwrap();
        assert_eq!(list(tmp.path()).unwrap(), vec![4, 10]);
        assert!(root.join("mine").exists() && root.join("step-0000000099").exists());
        assert!(matches!(
            resolve(&tmp.path().join("nothing")),
            Err(CheckpointError::NotFound { .. })
        ));
    }
}
