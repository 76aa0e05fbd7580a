//! One Barlow Twins step, as the paper's loop writes it: two augmented
//! views -> backbone -> projector -> loss (each view's embeddings
//! batch-normalised, their cross-correlation pushed towards the identity)
//! -> backward -> LARS. `docs/method.md` gives the maths.

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use crate::loss::barlow_twins_loss;
use crate::model::BarlowTwins;

/// Runs one step on the views `y1` and `y2` (normalised, `[N, 3, H, W]`)
/// and returns the updated model and the step's loss. `lr_weights` is the
/// weights' rate; the optimiser scales the biases' rate from it.
pub fn barlow_twins_step<B, O>(
    model: BarlowTwins<B>,
    optim: &mut O,
    y1: Tensor<B, 4>,
    y2: Tensor<B, 4>,
    lambda: f32,
    lr_weights: f64,
) -> (BarlowTwins<B>, f32)
where
    B: AutodiffBackend,
    O: Optimizer<BarlowTwins<B>, B>,
{
    let z1 = model.projector.forward(model.backbone.forward(y1));
    let z2 = model.projector.forward(model.backbone.forward(y2));
    let loss = barlow_twins_loss(z1, z2, lambda);
    let value = loss.clone().into_scalar().elem::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr_weights, model, grads), value)
}
