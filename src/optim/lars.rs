//! LARS as the Barlow Twins reference code runs it, as a burn optimiser.
//!
//! For a parameter `p` with gradient `g`, at learning rate `lr`:
//! ```text
//! if p.ndim > 1:   g = g + wd * p
//!                  q = eta * ||p|| / ||g||  if both norms > 0, else 1
//!                  g = g * q
//! mu = momentum * mu + g          (no dampening, no Nesterov)
//! p  = p - lr * mu
//! ```
//! 1-D parameters (biases and BatchNorm gammas and betas) get neither
//! weight decay nor adaptation, and their own learning rate: the biases
//! group's rate is `lr * biases_over_weights`, which stays fixed through the
//! schedule since both rates follow the same curve. burn passes the rank of
//! each parameter as the const generic `D`, which is how the groups are told
//! apart.

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::SimpleOptimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::record::Record;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// LARS hyper-parameters (the reference's defaults).
#[derive(Config, Debug)]
pub struct LarsConfig {
    #[config(default = 1e-6)]
    pub weight_decay: f64,
    #[config(default = 0.9)]
    pub momentum: f64,
    #[config(default = 0.001)]
    pub eta: f64,
    /// lr_biases / lr_weights (reference: 0.0048 / 0.2).
    #[config(default = 0.024)]
    pub biases_over_weights: f64,
}

/// The optimiser, on a non-autodiff backend (wrap it with [`LarsConfig::init`]).
#[derive(Debug, Clone)]
pub struct Lars {
    cfg: LarsConfigValues,
}

#[derive(Debug, Clone, Copy)]
struct LarsConfigValues {
    weight_decay: f64,
    momentum: f64,
    eta: f64,
    biases_over_weights: f64,
}

/// Per-parameter momentum buffer.
#[derive(Record, Clone)]
pub struct LarsState<B: Backend, const D: usize> {
    pub mu: Tensor<B, D>,
}

impl LarsConfig {
    pub fn build(&self) -> Lars {
        Lars {
            cfg: LarsConfigValues {
                weight_decay: self.weight_decay,
                momentum: self.momentum,
                eta: self.eta,
                biases_over_weights: self.biases_over_weights,
            },
        }
    }

    /// The optimiser for module `M` on autodiff backend `B`; step it with the
    /// weights group's rate.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> OptimizerAdaptor<Lars, M, B> {
        OptimizerAdaptor::from(self.build())
    }
}

/// The L2 norm of `t`, summed row by row (dim 0) and then over the rows:
/// a fixed order of additions for every tensor whose rows are below the
/// size at which a backend's whole-tensor sum goes parallel (Flex: 4M
/// values, added in an order that varies with its threads' timing). So
/// data-parallel replicas, which hold the same bits, compute the same
/// trust ratios and stay the same bits.
fn norm<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, 1> {
    let dims = t.dims();
    let rows = dims[0].max(1);
    let n: usize = dims.iter().product();
    t.powi_scalar(2)
        .reshape([rows, n / rows])
        .sum_dim(1)
        .sum()
        .sqrt()
}

impl<B: Backend> SimpleOptimizer<B> for Lars {
    type State<const D: usize> = LarsState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let c = &self.cfg;
        let (dp, lr) = if D > 1 {
            let dp = grad + tensor.clone() * c.weight_decay;
            let p_norm = norm(tensor.clone());
            let g_norm = norm(dp.clone());
            let both = p_norm
                .clone()
                .greater_elem(0.0)
                .bool_and(g_norm.clone().greater_elem(0.0));
            // Where a norm is 0 the ratio may be NaN or inf; it is not selected.
            let q = p_norm.ones_like().mask_where(both, p_norm * c.eta / g_norm);
            (dp * q.unsqueeze::<D>(), lr)
        } else {
            (grad, lr * c.biases_over_weights)
        };
        let mu = match state {
            Some(s) => s.mu * c.momentum + dp,
            None => dp,
        };
        (tensor - mu.clone() * lr, Some(LarsState { mu }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        LarsState {
            mu: state.mu.to_device(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type B = Flex;

    fn t2(v: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
    }

    fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
        t.into_data()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// The reference formula in plain f64.
    fn reference(
        p: &[f64],
        g: &[f64],
        mu: Option<&[f64]>,
        lr: f64,
        wd: f64,
        adapt: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut dp: Vec<f64> = g.to_vec();
        if adapt {
            dp = dp.iter().zip(p).map(|(g, p)| g + wd * p).collect();
            let pn = p.iter().map(|x| x * x).sum::<f64>().sqrt();
            let gn = dp.iter().map(|x| x * x).sum::<f64>().sqrt();
            let q = if pn > 0.0 && gn > 0.0 {
                0.001 * pn / gn
            } else {
                1.0
            };
            dp = dp.iter().map(|x| x * q).collect();
        }
        let mu: Vec<f64> = match mu {
            Some(m) => m.iter().zip(&dp).map(|(m, d)| 0.9 * m + d).collect(),
            None => dp,
        };
        let p2 = p.iter().zip(&mu).map(|(p, m)| p - lr * m).collect();
        (p2, mu)
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-3), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn two_steps_on_a_matrix_follow_the_formula() {
        let lars = LarsConfig::new().with_weight_decay(0.01).build();
        let p = [0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75];
        let g1 = [0.1f32, 0.2, -0.3, 0.05, -0.1, 0.4];
        let g2 = [-0.2f32, 0.1, 0.1, 0.3, 0.0, -0.1];
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (p1, s1) =
            SimpleOptimizer::<B>::step(&lars, 0.5, t2(&p, [2, 3]), t2(&g1, [2, 3]), None);
        let (want_p1, want_mu1) = reference(&f(&p), &f(&g1), None, 0.5, 0.01, true);
        close(&vals(p1.clone()), &want_p1);
        let s1 = s1.unwrap();
        close(&vals(s1.mu.clone()), &want_mu1);
        let p1v = vals(p1.clone());
        let (p2, _) = SimpleOptimizer::<B>::step(&lars, 0.5, p1, t2(&g2, [2, 3]), Some(s1));
        let (want_p2, _) = reference(&p1v, &f(&g2), Some(&want_mu1), 0.5, 0.01, true);
        close(&vals(p2), &want_p2);
    }

    #[test]
    fn vectors_get_no_decay_no_adaptation_and_the_biases_rate() {
        let lars = LarsConfig::new().build();
        let p = Tensor::<B, 1>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 3.0], [3]),
            &Default::default(),
        );
        let g = Tensor::<B, 1>::from_data(
            TensorData::new(vec![0.5f32, 0.5, -1.0], [3]),
            &Default::default(),
        );
        let (p1, _) = SimpleOptimizer::<B>::step(&lars, 1.0, p, g, None);
        // lr_b = 1.0 * 0.024: p - 0.024 * g exactly.
        close(&vals(p1), &[1.0 - 0.012, -2.0 - 0.012, 3.0 + 0.024]);
    }

    #[test]
    fn zero_norms_leave_the_update_unscaled() {
        let lars = LarsConfig::new().with_weight_decay(0.0).build();
        // ||p|| = 0: q = 1, so the step is plain momentum SGD.
        let (p1, _) = SimpleOptimizer::<B>::step(
            &lars,
            0.1,
            t2(&[0.0; 4], [2, 2]),
            t2(&[1.0, 2.0, 3.0, 4.0], [2, 2]),
            None,
        );
        close(&vals(p1), &[-0.1, -0.2, -0.3, -0.4]);
        // ||g|| = 0: nothing moves, and nothing is NaN.
        let (p1, _) = SimpleOptimizer::<B>::step(
            &lars,
            0.1,
            t2(&[1.0, 2.0, 3.0, 4.0], [2, 2]),
            t2(&[0.0; 4], [2, 2]),
            None,
        );
        close(&vals(p1), &[1.0, 2.0, 3.0, 4.0]);
    }
}
