//! The data-parallel step with W peers is the single-device step on the
//! global batch: same loss, same gradients, same weights after LARS steps.

use std::time::Duration;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::loss::{barlow_twins_loss_with, standardise};
use crate::model::{Arch, BarlowTwins, Norm, Precision, Projector, ResNetConfig};
use crate::optim::LarsConfig;
use crate::train::{Parallel, data_parallel_step};

type AB = Autodiff<Flex>;

const BATCH: usize = 12;
const LAMBDA: f32 = 0.0051;

/// What one run of the small network records: the loss of each step, each
/// parameter's gradient at the first step, the parameters at the end.
#[derive(Debug)]
struct Trace {
    losses: Vec<f32>,
    grads: Vec<Vec<f32>>,
    params: Vec<Vec<f32>>,
}

/// Deterministic inputs `[BATCH, 4]`.
fn inputs(seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..BATCH * 4)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn rows(x: &[f32], from: usize, to: usize, width: usize) -> Tensor<AB, 2> {
    let data = TensorData::new(x[from * width..to * width].to_vec(), [to - from, width]);
    Tensor::from_data(data, &Default::default())
}

/// Linear -> BatchNorm -> ReLU -> Linear, the same start for every run.
fn network() -> Projector<AB> {
    let d = Default::default();
    let mut p = Projector::<AB>::new(4, &[8, 6], &d);
    let mut k = 0f32;
    p.linears = p
        .linears
        .into_iter()
        .map(|mut l| {
            let [i, o] = l.weight.dims();
            let w: Vec<f32> = (0..i * o)
                .map(|j| {
                    k += 1.0;
                    ((j as f32 * 0.37 + k * 0.11).sin()) * 0.6
                })
                .collect();
            l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [i, o]), &d));
            l
        })
        .collect();
    p
}

/// How the peers are told to combine their work.
#[derive(Clone, Copy, PartialEq)]
enum Method {
    /// Global BatchNorm statistics and a differentiable all-reduce of c.
    Exact,
    /// The negative control: each peer's own BatchNorm statistics, and c
    /// all-reduced outside autograd (its gradient stays local).
    LocalStatsDetachedC,
}

/// Runs 3 LARS steps of the small network with the global batch split
/// into `splits` (one peer each, one thread each) and returns peer 0's
/// trace. One split is the single-device path.
fn run(splits: &[usize], method: Method) -> Trace {
    assert_eq!(splits.iter().sum::<usize>(), BATCH);
    let (x1, x2) = (inputs(1), inputs(2));
    let peers = group(splits.len(), Duration::from_secs(60));
    let mut starts = vec![0];
    for s in splits {
        starts.push(starts.last().unwrap() + s);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .into_iter()
            .map(|peer| {
                let (x1, x2, starts) = (&x1, &x2, &starts);
                scope.spawn(move || {
                    let (from, to) = (starts[peer.rank()], starts[peer.rank() + 1]);
                    let single = peer.world() == 1;
                    let mut model = network();
                    let mut optim = LarsConfig::new().init();
                    let mut trace = Trace {
                        losses: Vec::new(),
                        grads: Vec::new(),
                        params: Vec::new(),
                    };
                    for step in 0..3 {
                        let (z1, z2) = (rows(x1, from, to, 4), rows(x2, from, to, 4));
                        let norm = if single || method == Method::LocalStatsDetachedC {
                            Norm::Local
                        } else {
                            Norm::Global {
                                reducer: &peer,
                                batch: BATCH,
                            }
                        };
                        let f32 = Precision::F32;
                        let (z1, z2) = (
                            model.forward_with(z1, norm, f32),
                            model.forward_with(z2, norm, f32),
                        );
                        let loss = if method == Method::Exact || single {
                            barlow_twins_loss_with(z1, z2, LAMBDA, norm)
                        } else {
                            detached_c_loss(z1, z2, &peer)
                        };
                        trace.losses.push(loss.clone().into_scalar());
                        let grads = GradientsParams::from_grads(loss.backward(), &model);
                        let p = (!single).then_some(&peer);
                        let (grads, _) = combine_gradients(&model, grads, p, 1.0, 0.0).unwrap();
                        if step == 0 {
                            trace.grads = gradients(&model, &grads);
                        }
                        model = optim.step(0.3, model, grads);
                    }
                    trace.params = parameters(&model);
                    trace
                })
            })
            .collect();
        let mut traces: Vec<Trace> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // The replicas stay the same bits: every peer applied the same sums.
        for t in &traces[1..] {
            assert!(
                t.params == traces[0].params && t.losses == traces[0].losses,
                "replicas differ"
            );
        }
        traces.swap_remove(0)
    })
}

/// The paper's code: c from each peer's own standardised slice, summed
/// over the peers without a gradient, divided by the global batch.
fn detached_c_loss(z1: Tensor<AB, 2>, z2: Tensor<AB, 2>, peer: &Peer) -> Tensor<AB, 1> {
    let local = standardise(z1).transpose().matmul(standardise(z2));
    let summed = reduce::<AB, 2>(peer, local.clone().detach());
    let c = (local.clone() + (summed - local).detach()) / BATCH as f64;
    let d = c.dims()[0];
    let eye = Tensor::<AB, 2>::eye(d, &Default::default());
    let on = (c.clone() * eye.clone()).sum_dim(1).reshape([d]);
    let off = c * (eye.ones_like() - eye);
    (on - 1.0).powi_scalar(2).sum() + off.powi_scalar(2).sum() * LAMBDA as f64
}

struct Collect<'a> {
    grads: Option<&'a GradientsParams>,
    out: Vec<Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let values = match self.grads {
            Some(g) => g
                .get::<B::InnerBackend, D>(param.id)
                .map(|t| t.into_data().to_vec::<f32>().unwrap()),
            // Trainable parameters only: running statistics are checked in
            // `sync_batch_norm_updates_running_statistics_like_pytorch`.
            None if param.val().is_require_grad() => {
                Some(param.val().into_data().to_vec::<f32>().unwrap())
            }
            None => None,
        };
        self.out.extend(values);
    }
}

fn gradients<M: AutodiffModule<AB>>(model: &M, grads: &GradientsParams) -> Vec<Vec<f32>> {
    let mut c = Collect {
        grads: Some(grads),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

fn parameters<M: AutodiffModule<AB>>(model: &M) -> Vec<Vec<f32>> {
    let mut c = Collect {
        grads: None,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// The largest difference between `a` and `b` relative to `a`'s largest
/// magnitude, over all tensors.
fn worst(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12) as f64;
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs() as f64 / scale)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

fn loss_gap(a: &Trace, b: &Trace) -> f64 {
    a.losses
        .iter()
        .zip(&b.losses)
        .map(|(p, q)| ((p - q) / p).abs() as f64)
        .fold(0.0, f64::max)
}

#[test]
fn peers_take_the_single_device_step_on_the_global_batch() {
    let single = run(&[BATCH], Method::Exact);
    assert!(
        single.grads.len() == 4 && single.params.len() == 4,
        "{} gradients, {} trainable parameters",
        single.grads.len(),
        single.params.len()
    );
    for splits in [&[6, 6][..], &[5, 7], &[3, 4, 5], &[4, 4, 4]] {
        let peers = run(splits, Method::Exact);
        let (l, g, p) = (
            loss_gap(&single, &peers),
            worst(&single.grads, &peers.grads),
            worst(&single.params, &peers.params),
        );
        assert!(
            l < 1e-5 && g < 1e-5 && p < 1e-5,
            "{splits:?}: loss {l:e}, gradients {g:e}, weights {p:e}"
        );
    }
}

#[test]
fn per_peer_statistics_and_a_detached_c_do_not_give_the_global_step() {
    let single = run(&[BATCH], Method::Exact);
    let control = run(&[6, 6], Method::LocalStatsDetachedC);
    let g = worst(&single.grads, &control.grads);
    assert!(g > 1e-3, "the comparison cannot tell them apart: {g:e}");
}

#[test]
fn the_summed_values_are_the_same_bits_on_every_peer_whatever_the_timing() {
    for _ in 0..20 {
        let peers = group(3, Duration::from_secs(60));
        let sums: Vec<Vec<f64>> = std::thread::scope(|s| {
            let hs: Vec<_> = peers
                .into_iter()
                .map(|p| {
                    s.spawn(move || {
                        let r = p.rank();
                        let mut v = vec![0.1 * (r + 1) as f64, 1e16 + r as f64, -1e16];
                        p.all_reduce(&mut v).unwrap();
                        v
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let value = |r: usize| [0.1 * (r + 1) as f64, 1e16 + r as f64, -1e16];
        let mut want = vec![0.0; 3];
        for r in 0..3 {
            for (w, v) in want.iter_mut().zip(value(r)) {
                *w += v;
            }
        }
        assert!(sums.iter().all(|s| s == &want), "{sums:?} vs {want:?}");
    }
}

#[test]
fn a_failed_peer_stops_the_others_and_a_missing_one_times_out() {
    let peers = group(3, Duration::from_secs(60));
    let errors: Vec<Result<(), PeerError>> = std::thread::scope(|s| {
        let hs: Vec<_> = peers
            .into_iter()
            .map(|p| {
                s.spawn(move || {
                    if p.rank() == 1 {
                        p.abort("out of memory");
                        return Err(p.failure().unwrap());
                    }
                    p.all_reduce(&mut [1.0])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in &errors {
        assert_eq!(
            e.as_ref().unwrap_err().to_string(),
            "peer 1 of 3 failed: out of memory"
        );
    }

    // A panicking peer aborts the group from its handle's drop.
    let mut peers = group(2, Duration::from_secs(60));
    let p1 = peers.pop().unwrap();
    let p0 = peers.pop().unwrap();
    let panicked = std::thread::spawn(move || {
        let _p1 = p1;
        panic!("boom");
    })
    .join();
    assert!(panicked.is_err());
    let e = p0.all_reduce(&mut [1.0]).unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");

    // A peer that never arrives: the other fails after the timeout.
    let peers = group(2, Duration::from_millis(200));
    let e = peers[0].all_reduce(&mut [1.0]).unwrap_err();
    assert!(
        matches!(
            e,
            PeerError::Timeout {
                rank: 0,
                round: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        peers[1].all_reduce(&mut [1.0]).is_err(),
        "the failure is sticky"
    );
}

#[test]
fn the_resnet_step_with_two_peers_is_the_single_device_step() {
    let d = Default::default();
    let cfg = ResNetConfig {
        arch: Arch::Resnet18,
        width: 4,
        small_stem: true,
    };
    let (n, px) = (6usize, 8usize);
    let view = |seed: usize| -> Vec<u8> {
        (0..n * 3 * px * px)
            .map(|i| ((i * 7919 + seed * 104_729) % 251) as u8)
            .collect()
    };
    let (v1, v2) = (view(1), view(2));
    let run = |splits: &[usize]| -> Vec<f32> {
        let peers = group(splits.len(), Duration::from_secs(120));
        let per_image = 3 * px * px;
        std::thread::scope(|s| {
            let hs: Vec<_> = peers
                .into_iter()
                .map(|peer| {
                    let (v1, v2, cfg) = (&v1, &v2, &cfg);
                    let from: usize = splits[..peer.rank()].iter().sum();
                    let m = splits[peer.rank()];
                    s.spawn(move || {
                        let mut model = BarlowTwins::<AB>::seeded(cfg, &[16, 16], 5, &d);
                        let mut optim = LarsConfig::new().init();
                        let bytes = |v: &[u8]| v[from * per_image..(from + m) * per_image].to_vec();
                        let mut losses = Vec::new();
                        for _ in 0..2 {
                            let y1 =
                                crate::model::normalise_u8::<AB>(&bytes(v1), [m, 3, px, px], &d);
                            let y2 =
                                crate::model::normalise_u8::<AB>(&bytes(v2), [m, 3, px, px], &d);
                            let parallel = Parallel {
                                peer: Some(&peer),
                                batch: n,
                                grad_divisor: 1.0,
                                stop: false,
                                precision: Precision::F32,
                            };
                            let stepped = data_parallel_step(
                                model, &mut optim, y1, y2, LAMBDA, 0.2, parallel,
                            )
                            .unwrap();
                            model = stepped.model;
                            losses.push(stepped.loss.into_scalar());
                        }
                        losses
                    })
                })
                .collect();
            let mut all: Vec<Vec<f32>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            assert!(all.iter().all(|l| l == &all[0]), "peers disagree: {all:?}");
            all.swap_remove(0)
        })
    };
    let (one, two) = (run(&[n]), run(&[2, 4]));
    for (a, b) in one.iter().zip(&two) {
        assert!(((a - b) / a).abs() < 1e-5, "{one:?} vs {two:?}");
    }
    assert!(one[1] != one[0], "the second step saw new weights");
}

#[test]
fn sync_batch_norm_updates_running_statistics_like_pytorch() {
    use burn::nn::BatchNormConfig;
    let d = Default::default();
    let (n, c) = (5usize, 3usize);
    let x: Vec<f32> = inputs(9)[..n * c].to_vec();
    let whole = Tensor::<AB, 2>::from_data(TensorData::new(x.clone(), [n, c]), &d);
    let single = BatchNormConfig::new(c).init::<AB>(&d);
    let want: Vec<f32> = single.forward(whole).into_data().to_vec().unwrap();
    let peers = group(2, Duration::from_secs(60));
    let got: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
        let hs: Vec<_> = peers
            .into_iter()
            .map(|peer| {
                let x = &x;
                s.spawn(move || {
                    let (from, to) = if peer.rank() == 0 { (0, 2) } else { (2, n) };
                    let bn = BatchNormConfig::new(c).init::<AB>(&Default::default());
                    let norm = Norm::Global {
                        reducer: &peer,
                        batch: n,
                    };
                    let y = crate::model::norm::batch_norm(&bn, rows(x, from, to, c), norm);
                    let v = |t: Tensor<AB, 1>| t.into_data().to_vec::<f32>().unwrap();
                    (
                        y.into_data().to_vec::<f32>().unwrap(),
                        v(bn.running_mean.value_sync()),
                        v(bn.running_var.value_sync()),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let y: Vec<f32> = got.iter().flat_map(|g| g.0.clone()).collect();
    for (a, b) in y.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{y:?} vs {want:?}");
    }
    // burn's single-device update uses the biased variance v; PyTorch's
    // SyncBatchNorm (and the peers) the unbiased n / (n - 1) v.
    let m = single.momentum as f32;
    let mean: Vec<f32> = single
        .running_mean
        .value_sync()
        .into_data()
        .to_vec()
        .unwrap();
    let var: Vec<f32> = single
        .running_var
        .value_sync()
        .into_data()
        .to_vec()
        .unwrap();
    for (peer_mean, peer_var) in got.iter().map(|g| (&g.1, &g.2)) {
        for j in 0..c {
            let biased = (var[j] - (1.0 - m)) / m;
            let unbiased = (1.0 - m) + m * biased * n as f32 / (n - 1) as f32;
            assert!(
                (peer_mean[j] - mean[j]).abs() < 1e-6,
                "{peer_mean:?} vs {mean:?}"
            );
            assert!(
                (peer_var[j] - unbiased).abs() < 1e-5,
                "{peer_var:?} vs {unbiased}"
            );
        }
    }
}

#[test]
fn the_grad_divisor_step_is_the_lars_formula_on_the_divided_gradient() {
    use burn::nn::{Linear, LinearConfig};
    let d = Default::default();
    // Weight [in, out]; the loss sum(x W) has dL/dW_ij = x_i.
    let w = [0.5f64, -1.0, 2.0, 0.25];
    let x = [1.0f64, 2.0];
    let mut lin = LinearConfig::new(2, 2).with_bias(false).init::<AB>(&d);
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    lin.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w32, [2, 2]), &d));
    let input = Tensor::<AB, 2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &d);
    let grads = GradientsParams::from_grads(lin.forward(input).sum().backward(), &lin);
    let (divisor, lr, wd, eta) = (4.0, 5.0, 1.0, 0.001);
    let (grads, _) = combine_gradients(&lin, grads, None, divisor, 0.0).unwrap();
    let mut optim = LarsConfig::new()
        .with_weight_decay(wd)
        .init::<AB, Linear<AB>>();
    let got = parameters(&optim.step(lr, lin, grads)).remove(0);
    // LARS by hand on g / D: dp = g / D + wd w, q = eta |w| / |dp|, and the
    // first step moves w by lr q dp.
    let dp: Vec<f64> = (0..4).map(|k| x[k / 2] / divisor + wd * w[k]).collect();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let q = eta * norm(&w) / norm(&dp);
    for k in 0..4 {
        let want = w[k] - lr * q * dp[k];
        assert!(
            (got[k] as f64 - want).abs() <= 1e-6 * want.abs(),
            "w[{k}]: {} vs {want}",
            got[k]
        );
    }
}

/// `agree` on `facts[p]` in process `p` of `facts.len()`, each a thread.
fn agree_across(facts: Vec<Vec<Fact>>) -> Vec<Result<(), PeerError>> {
    let processes = threads::Threads::group(facts.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = processes
            .iter()
            .zip(&facts)
            .map(|(p, f)| s.spawn(move || agree(p.as_ref(), f)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn processes_agree_only_when_every_fact_is_the_same_everywhere() {
    let facts = |dataset: &str| {
        vec![
            Fact::new("config seed", "42"),
            Fact::new("dataset", dataset),
            Fact::new("config", "x".repeat(100)),
        ]
    };
    let same = agree_across(vec![facts("8 records"); 3]);
    assert!(same.iter().all(|r| r.is_ok()), "{same:?}");
    // Process 2 of 3 holds another dataset: every process refuses, each
    // naming the dataset with its own value and nothing else.
    let got = agree_across(vec![
        facts("8 records"),
        facts("8 records"),
        facts("9 records"),
    ]);
    for (rank, r) in got.iter().enumerate() {
        match r {
            Err(PeerError::Disagree {
                process,
                processes: 3,
                facts,
            }) => {
                assert_eq!(*process, rank);
                assert!(facts.starts_with("dataset (here: "), "{facts}");
                assert!(!facts.contains("config"), "{facts}");
            }
            other => panic!("process {rank}: {other:?}"),
        }
    }
    // A long value is shown by its checksum; another number of facts (a
    // different barlow) is refused before the facts themselves are summed.
    let mut long = facts("8 records");
    long[2] = Fact::new("config", "y".repeat(100));
    let got = agree_across(vec![facts("8 records"), long]);
    let message = got[1].as_ref().unwrap_err().to_string();
    assert!(message.contains("config (here: checksum "), "{message}");
    let got = agree_across(vec![facts("8 records"), facts("8 records")[..2].to_vec()]);
    let message = got[0].as_ref().unwrap_err().to_string();
    assert!(message.contains("number of facts (here: 3)"), "{message}");
}
