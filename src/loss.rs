//! The Barlow Twins objective, as the paper writes it (`docs/method.md`):
//!
//! ```text
//! c    = bn(z1)^T bn(z2) / N          bn: per-feature standardisation over the
//!                                     batch, biased variance, eps 1e-5
//! loss = sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2
//! ```
//!
//! Each view is standardised on its own (standardising the concatenated
//! views is a known bug of a public port). The inputs are cast to f32 first,
//! so the standardisation, the D x D matrix and the loss are f32 even when
//! the projector computes in bf16 (`--precision bf16`; the cast is
//! differentiable, so the gradient flows back in bf16).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::model::Norm;
use crate::model::norm::global_moments;
use crate::model::precision::to_f32;
use crate::peers::reduce;

/// The reference's batch-norm epsilon.
pub const BN_EPS: f64 = 1e-5;

/// Per-feature standardisation over the batch (dim 0): zero mean, unit
/// biased variance. This is the affine-free BatchNorm1d of the reference in
/// training mode.
pub fn standardise<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 2> {
    let centred = z.clone() - z.mean_dim(0);
    let var = centred.clone().powi_scalar(2).mean_dim(0);
    centred / (var + BN_EPS).sqrt()
}

/// The D x D cross-correlation of the two standardised views.
pub fn cross_correlation<B: Backend>(z1: Tensor<B, 2>, z2: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = z1.dims()[0] as f64;
    standardise(z1).transpose().matmul(standardise(z2)) / n
}

/// The Barlow Twins loss of projector outputs `z1`, `z2` (`[N, D]`, before
/// the affine-free BatchNorm, which this applies). Returns a one-element
/// tensor.
pub fn barlow_twins_loss<B: Backend>(
    z1: Tensor<B, 2>,
    z2: Tensor<B, 2>,
    lambda: f32,
) -> Tensor<B, 1> {
    let (z1, z2) = (to_f32(z1), to_f32(z2));
    let n = z1.dims()[0] as f64;
    let (s1, s2) = (standardise(z1), standardise(z2));
    // c_ii directly from the standardised views (no D x D identity mask).
    let diag = (s1.clone() * s2.clone()).sum_dim(0) / n; // [1, D]
    let c = s1.transpose().matmul(s2) / n;
    objective(c, diag, lambda)
}

/// `sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2` from every entry of
/// c (any layout) and its diagonal.
fn objective<B: Backend, const C: usize, const D: usize>(
    c: Tensor<B, C>,
    diag: Tensor<B, D>,
    lambda: f32,
) -> Tensor<B, 1> {
    let on_diag = (diag.clone() - 1.0).powi_scalar(2).sum();
    let off_diag = c.powi_scalar(2).sum() - diag.powi_scalar(2).sum();
    on_diag + off_diag * lambda as f64
}

/// [`barlow_twins_loss`] with the statistics `norm` names. With
/// [`Norm::Global`], `z1` and `z2` are this peer's slices of the global
/// batch: each view is standardised with the global batch's moments and
/// the cross-correlation is summed over the peers before the loss, so
/// every peer computes the global batch's loss (and, through the
/// differentiable sums, its gradient along its own slice).
pub fn barlow_twins_loss_with<B: Backend>(
    z1: Tensor<B, 2>,
    z2: Tensor<B, 2>,
    lambda: f32,
    norm: Norm<'_, B>,
) -> Tensor<B, 1> {
    let Norm::Global { reducer, batch } = norm else {
        return barlow_twins_loss(z1, z2, lambda);
    };
    let (z1, z2) = (to_f32(z1), to_f32(z2));
    let n = batch as f64;
    let standardise = |z: Tensor<B, 2>| {
        let (mean, var, _) = global_moments(z.clone(), reducer, batch);
        (z - mean.unsqueeze()) / (var + BN_EPS).sqrt().unsqueeze()
    };
    let (s1, s2) = (standardise(z1), standardise(z2));
    let d = s1.dims()[1];
    // This peer's share of c and of its diagonal, summed over the peers
    // in one all-reduce.
    let local = Tensor::cat(
        vec![
            s1.clone().transpose().matmul(s2.clone()).reshape([d * d]),
            (s1 * s2).sum_dim(0).reshape([d]),
        ],
        0,
    );
    let global = reduce(reducer, local) / n;
    let c = global.clone().slice(0..d * d);
    let diag = global.slice(d * d..d * d + d);
    objective(c, diag, lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Flex;
    type AB = Autodiff<Flex>;

    /// An independent f64 implementation, written from the paper's formula.
    #[allow(clippy::needless_range_loop)]
    fn reference(z1: &[Vec<f64>], z2: &[Vec<f64>], lambda: f64) -> f64 {
        let n = z1.len();
        let d = z1[0].len();
        let bn = |z: &[Vec<f64>]| -> Vec<Vec<f64>> {
            let mut out = vec![vec![0.0; d]; n];
            for j in 0..d {
                let mean = z.iter().map(|r| r[j]).sum::<f64>() / n as f64;
                let var = z.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n as f64;
                for i in 0..n {
                    out[i][j] = (z[i][j] - mean) / (var + 1e-5).sqrt();
                }
            }
            out
        };
        let (a, b) = (bn(z1), bn(z2));
        let mut loss = 0.0;
        for i in 0..d {
            for j in 0..d {
                let c: f64 = (0..n).map(|k| a[k][i] * b[k][j]).sum::<f64>() / n as f64;
                loss += if i == j {
                    (1.0 - c).powi(2)
                } else {
                    lambda * c * c
                };
            }
        }
        loss
    }

    fn sample(n: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((s >> 33) as f64 / (1u64 << 31) as f64) * 4.0 - 2.0
                    })
                    .collect()
            })
            .collect()
    }

    fn tensor<Bk: Backend>(z: &[Vec<f64>]) -> Tensor<Bk, 2> {
        let (n, d) = (z.len(), z[0].len());
        let flat: Vec<f32> = z.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_data(TensorData::new(flat, [n, d]), &Default::default())
    }

    #[test]
    fn loss_matches_a_hand_computed_value() {
        // N = 2, D = 2: standardised columns are exactly +-1, so c is easy.
        // z1 columns: (1, 3) -> (-1, 1); (0, 4) -> (-1, 1)
        // z2 columns: (2, 0) -> (1, -1); (5, 6) -> (-1, 1)
        // c = [[-1, 1], [-1, 1]] (up to eps): on = (1+1)^2 + 0 = 4,
        // off = 1 + 1 = 2.
        let z1 = vec![vec![1.0, 0.0], vec![3.0, 4.0]];
        let z2 = vec![vec![2.0, 5.0], vec![0.0, 6.0]];
        let got = barlow_twins_loss::<B>(tensor(&z1), tensor(&z2), 0.5).into_scalar();
        let want = 4.0 + 0.5 * 2.0;
        assert!((got as f64 - want).abs() < 1e-3, "{got} vs {want}");
        assert!((reference(&z1, &z2, 0.5) - want).abs() < 1e-3);
    }

    #[test]
    fn loss_matches_the_reference_on_random_inputs() {
        for (n, d, seed) in [(8, 4, 1u64), (16, 6, 2), (5, 3, 3)] {
            let (z1, z2) = (sample(n, d, seed), sample(n, d, seed + 100));
            let got = barlow_twins_loss::<B>(tensor(&z1), tensor(&z2), 0.0051).into_scalar() as f64;
            let want = reference(&z1, &z2, 0.0051);
            assert!(
                ((got - want) / want).abs() < 1e-4,
                "n={n} d={d}: {got} vs {want}"
            );
        }
        // Identical views that are already decorrelated give a loss near 0.
        let z = vec![
            vec![1.0, 1.0],
            vec![1.0, -1.0],
            vec![-1.0, 1.0],
            vec![-1.0, -1.0],
        ];
        let got = barlow_twins_loss::<B>(tensor(&z), tensor(&z), 0.0051).into_scalar();
        assert!(got.abs() < 1e-3, "{got}");
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_reference() {
        let (n, d) = (6, 3);
        let (z1, z2) = (sample(n, d, 7), sample(n, d, 8));
        let lambda = 0.0051;
        let t1 = tensor::<AB>(&z1).require_grad();
        let t2 = tensor::<AB>(&z2);
        let loss = barlow_twins_loss(t1.clone(), t2, lambda as f32);
        let grads = loss.backward();
        let g: Vec<f32> = t1.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let h = 1e-5;
        for i in 0..n {
            for j in 0..d {
                let (mut plus, mut minus) = (z1.clone(), z1.clone());
                plus[i][j] += h;
                minus[i][j] -= h;
                let fd =
                    (reference(&plus, &z2, lambda) - reference(&minus, &z2, lambda)) / (2.0 * h);
                let got = g[i * d + j] as f64;
                let scale = fd.abs().max(1e-2);
                assert!(
                    ((got - fd) / scale).abs() < 1e-3,
                    "dL/dz1[{i}][{j}]: {got} vs {fd}"
                );
            }
        }
    }
}
