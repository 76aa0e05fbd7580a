//! Each peer's replica: the network and optimiser it starts from, fresh,
//! from a file's weights or from the checkpoint it resumes; and what the
//! processes of a multi-process run check alike before they start.

use std::path::Path;

use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::AutodiffBackend;

use super::{RunOptions, TrainError};
use crate::data::shard::Dataset;
use crate::model::BarlowTwins;
use crate::model::torchvision::Weights;
use crate::optim::Lars;
use crate::peers::Fact;
use crate::run::{
    CheckpointError, CheckpointState, TrainConfig, checkpoint, differences, trajectory_json,
};

/// The model and optimiser a run starts from on `device`: the latest
/// checkpoint's with its state when resuming and there is one; else seeded
/// (or `run.init_from`'s weights). Every data-parallel peer builds its own.
pub(super) fn replica<B: AutodiffBackend>(
    cfg: &TrainConfig,
    run: &RunOptions,
    device: &B::Device,
) -> Result<Replica<B>, TrainError> {
    let optim = cfg.optimizer::<B>();
    let newest = match run.resume.then(|| checkpoint::resolve(&run.out)) {
        Some(Ok(dir)) => Some(dir),
        None | Some(Err(CheckpointError::NotFound { .. })) => None,
        Some(Err(e)) => return Err(e.into()),
    };
    let Some(dir) = newest else {
        let model = initial_model(cfg, run.init_from.as_deref(), device)?;
        return Ok(Replica {
            model,
            optim,
            resumed: None,
        });
    };
    let state = checkpoint::load_state(&dir)?;
    if state.config.trajectory() != cfg.trajectory() {
        return Err(TrainError::ResumeMismatch {
            checkpoint: dir,
            differs: differences(&state.config, cfg)?,
        });
    }
    let model = BarlowTwins::<B>::new(&cfg.backbone(), &cfg.projector, device);
    let model = checkpoint::load_model(&dir, model, device)?;
    let optim = checkpoint::load_optim(&dir, optim, device)?;
    Ok(Replica {
        model,
        optim,
        resumed: Some(state),
    })
}

/// One peer's network and optimiser, and the checkpoint state it resumed.
pub(super) struct Replica<B: AutodiffBackend> {
    pub(super) model: BarlowTwins<B>,
    pub(super) optim: OptimizerAdaptor<Lars, BarlowTwins<B>, B>,
    pub(super) resumed: Option<CheckpointState>,
}

/// The network a fresh run starts from: seeded from `cfg.seed`, or the
/// weights of `init_from` (a torchvision-named safetensors file: the
/// backbone, and the projector too when the file has one of `cfg`'s widths).
pub fn initial_model<B: AutodiffBackend>(
    cfg: &TrainConfig,
    init_from: Option<&Path>,
    device: &B::Device,
) -> Result<BarlowTwins<B>, TrainError> {
    let model = BarlowTwins::<B>::seeded(&cfg.backbone(), &cfg.projector, cfg.seed, device);
    let Some(path) = init_from else {
        return Ok(model);
    };
    let w = Weights::read(path)?;
    if w.projector_dims().as_ref() == Some(&cfg.projector) {
        let (backbone, projector) = w.load_model(model.backbone, model.projector, device)?;
        Ok(BarlowTwins {
            backbone,
            projector,
        })
    } else {
        Ok(BarlowTwins {
            backbone: w.load_backbone(model.backbone, device)?,
            projector: model.projector,
        })
    }
}

/// What every process of a multi-process run must hold alike at its start
/// ([`crate::peers::agree`]): each setting of the trajectory, the dataset's
/// shards, the peers per process, where the run stops, the step it starts
/// from and the weights it starts with.
pub(super) fn start_facts<B: AutodiffBackend>(
    cfg: &TrainConfig,
    dataset: &Dataset,
    peers: usize,
    start: u64,
    model: &BarlowTwins<B>,
) -> Result<Vec<Fact>, TrainError> {
    let config = trajectory_json(cfg)?;
    let mut facts: Vec<Fact> = match config.as_object() {
        Some(fields) => fields
            .iter()
            .map(|(k, v)| Fact::new(format!("config {k}"), v.to_string()))
            .collect(),
        None => vec![Fact::new("config", config.to_string())],
    };
    let shards = dataset
        .manifest()
        .shards
        .iter()
        .fold(crc32fast::Hasher::new(), |mut h, s| {
            h.update(s.file.as_bytes());
            h.update(&s.num_records.to_le_bytes());
            h.update(&s.bytes.to_le_bytes());
            h.update(&s.index_crc32.to_le_bytes());
            h
        });
    facts.extend([
        Fact::new(
            "dataset",
            format!(
                "{} records in {} shards, shard checksum {:08x}",
                dataset.len(),
                dataset.shards().len(),
                shards.finalize()
            ),
        ),
        Fact::new("peers per process", peers.to_string()),
        // A process that stopped early would leave the others waiting.
        Fact::new("max steps", format!("{:?}", cfg.max_steps)),
        Fact::new("starting step", start.to_string()),
        Fact::new(
            "starting weights",
            format!("checksum {:08x}", model.weights_checksum()),
        ),
    ]);
    Ok(facts)
}
