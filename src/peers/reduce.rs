//! The differentiable all-reduce, and the combination of the peers'
//! parameter gradients.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{ElementConversion, Tensor, TensorData, TensorPrimitive};

use super::{Peer, PeerError, Traffic};

/// A sum over the peers of a group, as the model's BatchNorms and the
/// loss call it (see [`crate::model::norm::Norm`]).
pub trait Reducer<B: Backend> {
    /// The sum over every peer of `x` (same shape on each), differentiable
    /// where `B` is: the backward pass sums the incoming gradient the same
    /// way.
    fn sum(&self, x: Tensor<B, 1>) -> Tensor<B, 1>;
}

/// [`Reducer::sum`] for a tensor of any rank.
pub fn reduce<B: Backend, const D: usize>(r: &dyn Reducer<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    r.sum(x.reshape([dims.iter().product::<usize>()]))
        .reshape(dims)
}

/// Backends on which [`Peer`] sums tensors: every autodiff backend (the
/// trainer's), through a custom backward op.
pub trait PeerReduce: Backend {
    /// The sum over the peers of a rank-1 tensor.
    fn peer_sum(x: FloatTensor<Self>, peer: &Peer) -> FloatTensor<Self>;
}

impl<B: PeerReduce> Reducer<B> for Peer {
    fn sum(&self, x: Tensor<B, 1>) -> Tensor<B, 1> {
        match x.into_primitive() {
            TensorPrimitive::Float(p) => {
                Tensor::from_primitive(TensorPrimitive::Float(B::peer_sum(p, self)))
            }
            // Quantized tensors are never reduced: the trainer runs in f32.
            q => Tensor::from_primitive(q),
        }
    }
}

/// The forward all-reduce on the host, keeping the tensor's device and
/// dtype. When the group has failed it returns `x` unchanged: the failure
/// is sticky and [`combine_gradients`] reports it at the end of the step
/// (a backward pass has no way to return an error).
fn host_sum<B: Backend>(x: FloatTensor<B>, peer: &Peer) -> FloatTensor<B> {
    let t = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(x));
    match host_sum_tensor(t.clone(), peer) {
        Ok(sum) => sum,
        Err(_) => t,
    }
    .into_primitive()
    .tensor()
}

/// The sum over the peers of `t`, through the host; counted in the peer's
/// [`Traffic`].
fn host_sum_tensor<B: Backend>(t: Tensor<B, 1>, peer: &Peer) -> Result<Tensor<B, 1>, PeerError> {
    let started = Instant::now();
    let (device, dtype) = (t.device(), t.dtype());
    let mut values: Vec<f64> = t.into_data().convert::<f64>().iter::<f64>().collect();
    peer.all_reduce(&mut values)?;
    let n = values.len();
    let sum = Tensor::from_data(TensorData::new(values, [n]).convert_dtype(dtype), &device);
    peer.count(Traffic {
        calls: 1,
        values: n as u64,
        round_trips: 1,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(sum)
}

#[derive(Debug)]
struct PeerSum;

impl<B: Backend> Backward<B, 1> for PeerSum {
    type State = Peer;

    fn backward(self, ops: Ops<Peer, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let peer = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            host_sum::<B>(grad, &peer)
        });
    }
}

impl<B: Backend, C: CheckpointStrategy> PeerReduce for Autodiff<B, C> {
    fn peer_sum(x: FloatTensor<Self>, peer: &Peer) -> FloatTensor<Self> {
        let sum = host_sum::<B>(x.primitive.clone(), peer);
        match PeerSum
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(peer.clone(), sum),
            OpsKind::UnTracked(prep) => prep.finish(sum),
        }
    }
}

/// Turns each peer's gradients into the step's gradient, in place of the
/// single-device one: the sum over the peers divided by `W * divisor`.
/// With one peer (`None`) and `divisor == 1` the gradients are returned
/// as they are. `divisor` is `--grad-divisor` (`docs/method.md`).
///
/// The gradients of all parameters travel in one buffer (one all-reduce a
/// step), in the module's parameter order, identical on every replica.
/// `vote` rides along in the same buffer and comes back summed over the
/// peers (the trainer's collective decision to stop).
pub fn combine_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    peer: Option<&Peer>,
    divisor: f64,
    vote: f64,
) -> Result<(GradientsParams, f64), PeerError> {
    let world = peer.map_or(1, Peer::world);
    if world == 1 {
        // Nothing to sum, nothing to read back: scale in place.
        if divisor != 1.0 {
            model.visit(&mut Scale::<B> {
                grads: &mut grads,
                factor: 1.0 / divisor,
                backend: std::marker::PhantomData,
            });
        }
        return Ok((grads, vote));
    }
    let mut take = Take::<B> {
        grads: &mut grads,
        flat: Vec::new(),
    };
    model.visit(&mut take);
    let mut flat = std::mem::take(&mut take.flat);
    let n: usize = flat.iter().map(|t| t.dims()[0]).sum();
    let device = match flat.first() {
        Some(t) => t.device(),
        None => return Ok((grads, vote)),
    };
    flat.push(Tensor::from_floats([vote as f32], &device));
    let mut all = Tensor::cat(flat, 0);
    let peer = peer.filter(|p| p.world() > 1);
    if let Some(peer) = peer {
        all = host_sum_tensor(all, peer)?;
    }
    let started = Instant::now();
    let votes = all.clone().slice(n..n + 1).into_scalar().elem::<f64>();
    if let Some(peer) = peer {
        peer.count(Traffic {
            round_trips: 1,
            seconds: started.elapsed().as_secs_f64(),
            ..Traffic::default()
        });
    }
    let all = all.slice(0..n).mul_scalar(1.0 / (world as f64 * divisor));
    let mut put = Put::<B> {
        grads: &mut grads,
        all,
        offset: 0,
    };
    model.visit(&mut put);
    Ok((grads, votes))
}

/// Multiplies every parameter's gradient by `factor`.
struct Scale<'a, B> {
    grads: &'a mut GradientsParams,
    factor: f64,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Moves every parameter's gradient out, flattened.
struct Take<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    flat: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let n = g.shape().num_elements();
            self.flat.push(g.reshape([n]));
        }
    }
}

/// Puts the combined gradients back, in the order [`Take`] took them.
struct Put<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    all: Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Put<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let dims = g.dims();
            let n = g.shape().num_elements();
            let slice = self.all.clone().slice(self.offset..self.offset + n);
            self.offset += n;
            self.grads.register(param.id, slice.reshape(dims));
        }
    }
}
