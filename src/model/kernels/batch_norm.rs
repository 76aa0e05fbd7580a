//! Training-mode BatchNorm on the CPU as three passes over the data, each
//! with its backward step.
//!
//! `x` is `[N, C, S]` (`S` = H·W for an image, 1 for the projector's
//! `[N, C]`). The passes: the per-channel sums ([`sums`], the mean once
//! divided by the count), the sums of squared deviations from that mean
//! ([`squared_deviation_sums`], the biased variance: two passes, as burn's
//! BatchNorm computes them), and `y = (x − mean) · γ/√(var + ε) + β`
//! ([`normalize`]). The autodiff graph strings them together, so that the
//! SyncBatchNorm of data-parallel peers puts the peers' sums between them
//! and one device, with nothing between, rounds as the peers do. Sums run
//! in f32 lanes within a row and in f64 across rows, in a fixed order
//! whatever the number of threads.

use rayon::prelude::*;

/// The layout of a BatchNorm input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    pub batch: usize,
    pub channels: usize,
    /// Values per channel per sample (H·W, or 1).
    pub spatial: usize,
}

impl NormShape {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per channel.
    pub fn count(&self) -> usize {
        self.batch * self.spatial
    }
}

/// The batch's per-channel statistics, kept for the backward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub mean: Vec<f32>,
    /// Biased.
    pub var: Vec<f32>,
}

/// Per channel, `Σ x`.
pub fn sums(s: &NormShape, x: &[f32]) -> Vec<f64> {
    assert_eq!(x.len(), s.len(), "input of {s:?}");
    channel_sums(s, x, |row, _, _| lane_sum(row))
}

/// Per channel, `Σ (x − mean)²`.
pub fn squared_deviation_sums(s: &NormShape, x: &[f32], mean: &[f32]) -> Vec<f64> {
    assert_eq!(x.len(), s.len(), "input of {s:?}");
    assert_eq!(mean.len(), s.channels, "mean of {s:?}");
    channel_sums(s, x, |row, _, c| lane_sq_dev(row, mean[c]))
}

/// `y = (x − mean) · γ/√(var + ε) + β`.
pub fn normalize(
    s: &NormShape,
    x: &[f32],
    moments: &Moments,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    y: &mut [f32],
) {
    assert!(
        x.len() == s.len() && y.len() == s.len(),
        "input and output of {s:?}"
    );
    let c_n = s.channels;
    assert!(gamma.len() == c_n && beta.len() == c_n, "γ and β of {s:?}");
    assert!(
        moments.mean.len() == c_n && moments.var.len() == c_n,
        "moments of {s:?}"
    );
    let inv = inv_stds(&moments.var, eps);
    map_rows(s, y, |c, row, range| {
        let (m, a, b) = (moments.mean[c], gamma[c] * inv[c], beta[c]);
        for (o, v) in row.iter_mut().zip(&x[range]) {
            *o = (v - m) * a + b;
        }
    });
}

/// The gradients of [`normalize`] given `dy`.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizeGradients {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// The gradients of [`normalize`] for every input: `x`'s into `dx` (when
/// asked for), the statistics', γ's and β's returned.
pub fn normalize_backward(
    s: &NormShape,
    x: &[f32],
    dy: &[f32],
    moments: &Moments,
    gamma: &[f32],
    eps: f64,
    dx: Option<&mut [f32]>,
) -> NormalizeGradients {
    let (dbeta, dgamma) = affine_gradients(s, x, dy, moments, eps);
    let inv = inv_stds(&moments.var, eps);
    if let Some(dx) = dx {
        assert_eq!(dx.len(), s.len(), "input gradient of {s:?}");
        map_rows(s, dx, |c, row, range| {
            let a = gamma[c] * inv[c];
            for (o, g) in row.iter_mut().zip(&dy[range]) {
                *o = a * g;
            }
        });
    }
    let per_channel = |f: &dyn Fn(usize) -> f64| (0..s.channels).map(|c| f(c) as f32).collect();
    NormalizeGradients {
        // y depends on mean through −(γ·inv)·mean, on var through inv.
        mean: per_channel(&|c| -f64::from(gamma[c] * inv[c]) * dbeta[c]),
        // ∂inv/∂var = −inv³/2, and Σ dy·(x − mean) = dγ/inv.
        var: per_channel(&|c| {
            let inv = f64::from(inv[c]);
            -0.5 * f64::from(gamma[c]) * inv * inv * dgamma[c]
        }),
        gamma: to_f32(&dgamma),
        beta: to_f32(&dbeta),
    }
}

/// The input's gradient of a per-channel sum ([`sums`], when `mean` is
/// `None`) or of [`squared_deviation_sums`] given the sums' gradient `g`
/// (`[C]`), into `dx`; for the squared deviations, also the mean's
/// gradient, returned.
pub fn sums_backward(
    s: &NormShape,
    x: &[f32],
    g: &[f32],
    mean: Option<&[f32]>,
    dx: Option<&mut [f32]>,
) -> Option<Vec<f32>> {
    assert_eq!(g.len(), s.channels, "gradient of {s:?}");
    if let Some(dx) = dx {
        assert_eq!(dx.len(), s.len(), "input gradient of {s:?}");
        map_rows(s, dx, |c, row, range| match mean {
            None => row.fill(g[c]),
            Some(mean) => {
                let (k, m) = (2.0 * g[c], mean[c]);
                for (o, v) in row.iter_mut().zip(&x[range]) {
                    *o = k * (v - m);
                }
            }
        });
    }
    let mean = mean?;
    // ∂/∂mean Σ (x − mean)² = −2·Σ (x − mean).
    let deviations = channel_sums(s, x, |row, _, c| {
        lane_sum(row) - (row.len() as f64) * f64::from(mean[c])
    });
    Some(
        (0..s.channels)
            .map(|c| (-2.0 * f64::from(g[c]) * deviations[c]) as f32)
            .collect(),
    )
}

/// Per channel, `Σ dy` (β's gradient) and `Σ dy·x̂` (γ's).
fn affine_gradients(
    s: &NormShape,
    x: &[f32],
    dy: &[f32],
    moments: &Moments,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    assert!(x.len() == s.len() && dy.len() == s.len(), "inputs of {s:?}");
    let inv = inv_stds(&moments.var, eps);
    let dbeta = channel_sums(s, dy, |row, _, _| lane_sum(row));
    let dgamma = channel_sums(s, dy, |row, range, c| {
        lane_dot_dev(row, &x[range], moments.mean[c]) * f64::from(inv[c])
    });
    (dbeta, dgamma)
}

fn inv_stds(var: &[f32], eps: f64) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (f64::from(v) + eps).sqrt()) as f32)
        .collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

/// Per channel `c`, the sum over the batch of `f(row, range, c)` for each
/// of the channel's `[spatial]` rows of `x` (`range` is the row's place in
/// the `[N, C, S]` layout, for reading other tensors of that layout),
/// added in batch order.
fn channel_sums(
    s: &NormShape,
    x: &[f32],
    f: impl Fn(&[f32], std::ops::Range<usize>, usize) -> f64 + Sync,
) -> Vec<f64> {
    let (c_n, sp) = (s.channels, s.spatial);
    (0..c_n)
        .into_par_iter()
        .with_min_len(super::conv::rows_per_task(s.count()))
        .map(|c| {
            (0..s.batch)
                .map(|b| {
                    let range = (b * c_n + c) * sp..(b * c_n + c + 1) * sp;
                    f(&x[range.clone()], range, c)
                })
                .sum()
        })
        .collect()
}

/// The sum of `row` in eight f32 lanes, added up in f64.
fn lane_sum(row: &[f32]) -> f64 {
    lanes(row, |v| v)
}

/// The sum of `(v − mean)²` over `row`, as [`lane_sum`].
fn lane_sq_dev(row: &[f32], mean: f32) -> f64 {
    lanes(row, |v| {
        let d = v - mean;
        d * d
    })
}

fn lanes(row: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(f(v))).sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    acc.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// `Σ a·(b − mean)`, as [`lane_sum`].
fn lane_dot_dev(a: &[f32], b: &[f32], mean: f32) -> f64 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| f64::from(p * (q - mean)))
        .sum();
    for (p, q) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += p[i] * (q[i] - mean);
        }
    }
    acc.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// Calls `f(channel, row, range)` on every `[spatial]` row of `out`,
/// `range` being the row's place in the `[N, C, S]` layout.
fn map_rows(
    s: &NormShape,
    out: &mut [f32],
    f: impl Fn(usize, &mut [f32], std::ops::Range<usize>) + Sync,
) {
    let sp = s.spatial.max(1);
    // Small rows (the projector's `[N, C]` has one value per row) go in
    // runs, so that a task is not one value.
    let rows_per_task = super::conv::rows_per_task(sp);
    out.par_chunks_mut(sp * rows_per_task)
        .enumerate()
        .for_each(|(t, rows)| {
            for (i, row) in rows.chunks_mut(sp).enumerate() {
                let r = t * rows_per_task + i;
                f(r % s.channels, row, r * sp..(r + 1) * sp);
            }
        });
}
