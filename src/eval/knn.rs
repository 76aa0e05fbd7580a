//! Weighted k-nearest-neighbour classification on L2-normalised features,
//! as in the Barlow Twins / InstDisc / DINO evaluations: cosine similarity,
//! the k most similar training samples vote for their labels with weight
//! `exp(similarity / temperature)`, the class with the largest total wins.
//!
//! Similarities are computed on the device in chunks of validation rows
//! (a `[chunk, train]` matrix at a time), so memory stays bounded on large
//! datasets; voting happens on the host.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::Features;
use crate::data::shard::NO_LABEL;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnConfig {
    pub k: usize,
    pub temperature: f32,
    /// Validation rows per similarity matrix.
    pub chunk: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig {
            k: 20,
            temperature: 0.1,
            chunk: 256,
        }
    }
}

/// Accuracies in percent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KnnResult {
    pub top1: f64,
    pub top5: f64,
    pub k: usize,
    pub evaluated: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KnnError {
    #[error("the training features are empty")]
    NoTrain,
    #[error(
        "the {set} set has unlabelled records (record {index}): kNN accuracy needs a label for every image (shardify an ImageFolder tree or a file list with labels)"
    )]
    Unlabelled { set: &'static str, index: usize },
    #[error("feature sizes differ: train {train}, val {val}")]
    Dim { train: usize, val: usize },
}

/// Classifies every row of `val` by its `cfg.k` nearest rows of `train`.
pub fn knn<B: Backend>(
    train: &Features,
    val: &Features,
    cfg: &KnnConfig,
    device: &B::Device,
) -> Result<KnnResult, KnnError> {
    if train.is_empty() {
        return Err(KnnError::NoTrain);
    }
    if train.dim != val.dim && !val.is_empty() {
        return Err(KnnError::Dim {
            train: train.dim,
            val: val.dim,
        });
    }
    for (set, f) in [("training", train), ("validation", val)] {
        if let Some(index) = f.labels.iter().position(|&l| l == NO_LABEL) {
            return Err(KnnError::Unlabelled { set, index });
        }
    }
    let k = cfg.k.clamp(1, train.len());
    // Labels may be sparse (numeric labels from a file list): vote over the
    // labels present, numbered in sorted order so that ties still go to the
    // lower label.
    let mut present: Vec<u32> = train.labels.iter().chain(&val.labels).copied().collect();
    present.sort_unstable();
    present.dedup();
    // Every label is in `present` by construction.
    let class = |label: u32| present.binary_search(&label).unwrap_or(0);
    let classes = present.len().max(1);
    let train_t = train.tensor::<B>(device).transpose();
    let (mut hit1, mut hit5) = (0usize, 0usize);
    let mut votes = vec![0f64; classes];
    let chunk = cfg.chunk.max(1);
    for start in (0..val.len()).step_by(chunk) {
        let end = (start + chunk).min(val.len());
        let rows = Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(
                val.values[start * val.dim..end * val.dim].to_vec(),
                [end - start, val.dim],
            ),
            device,
        );
        let (sims, idx) = rows.matmul(train_t.clone()).topk_with_indices(k, 1);
        let sims: Vec<f32> = sims.into_data().convert::<f32>().iter::<f32>().collect();
        let idx: Vec<i64> = idx.into_data().convert::<i64>().iter::<i64>().collect();
        for r in 0..end - start {
            votes.fill(0.0);
            for j in 0..k {
                let t = idx[r * k + j] as usize;
                let w = (sims[r * k + j] as f64 / cfg.temperature as f64).exp();
                votes[class(train.labels[t])] += w;
            }
            let truth = class(val.labels[start + r]);
            let mine = votes[truth];
            // Rank of the true class: classes with strictly more votes, ties
            // broken towards the lower label (as argmax would).
            let better = votes
                .iter()
                .enumerate()
                .filter(|&(c, &v)| v > mine || (v == mine && c < truth))
                .count();
            hit1 += usize::from(better == 0);
            hit5 += usize::from(better < 5);
        }
    }
    let n = val.len().max(1) as f64;
    Ok(KnnResult {
        top1: 100.0 * hit1 as f64 / n,
        top5: 100.0 * hit5 as f64 / n,
        k,
        evaluated: val.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn feats(rows: &[(&[f32], u32)]) -> Features {
        let dim = rows[0].0.len();
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for (v, l) in rows {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            values.extend(v.iter().map(|x| x / n));
            labels.push(*l);
        }
        Features {
            dim,
            values,
            labels,
        }
    }

    #[test]
    fn votes_are_weighted_by_similarity() {
        // Two training points of class 0 far from the query, one of class 1
        // close to it: with k = 3 and T = 0.1, the close one outweighs the two.
        let train = feats(&[(&[1.0, 0.0], 1), (&[0.0, 1.0], 0), (&[-0.2, 1.0], 0)]);
        let val = feats(&[(&[1.0, 0.1], 1), (&[0.1, 1.0], 0)]);
        let cfg = KnnConfig {
            k: 3,
            ..KnnConfig::default()
        };
        let r = knn::<Flex>(&train, &val, &cfg, &Default::default()).unwrap();
        assert_eq!(r.top1, 100.0);
        // With a huge temperature the votes are equal: majority (class 0) wins both.
        let flat = KnnConfig {
            temperature: 1e6,
            ..cfg
        };
        let r = knn::<Flex>(&train, &val, &flat, &Default::default()).unwrap();
        assert_eq!(r.top1, 50.0);
    }

    #[test]
    fn sparse_labels_vote_as_their_dense_numbering_does() {
        let rows = |labels: [u32; 3]| {
            feats(&[
                (&[1.0, 0.0], labels[0]),
                (&[0.0, 1.0], labels[1]),
                (&[-0.2, 1.0], labels[2]),
            ])
        };
        let val = |a: u32, b: u32| feats(&[(&[1.0, 0.1], a), (&[0.1, 1.0], b)]);
        let cfg = KnnConfig {
            k: 3,
            temperature: 1e6,
            ..KnnConfig::default()
        };
        let dense = knn::<Flex>(&rows([1, 0, 0]), &val(1, 0), &cfg, &Default::default()).unwrap();
        // The same classes as 4,000,000,000 and 7: no vote table of 4e9
        // entries, and the same order between the two classes.
        let sparse = knn::<Flex>(
            &rows([4_000_000_000, 7, 7]),
            &val(4_000_000_000, 7),
            &cfg,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(sparse, dense);
        assert_eq!(dense.top1, 50.0);
    }

    #[test]
    fn unlabelled_data_is_refused_with_a_reason() {
        let train = feats(&[(&[1.0, 0.0], 0), (&[0.0, 1.0], NO_LABEL)]);
        let val = feats(&[(&[1.0, 0.1], 0)]);
        let err =
            knn::<Flex>(&train, &val, &KnnConfig::default(), &Default::default()).unwrap_err();
        assert_eq!(
            err,
            KnnError::Unlabelled {
                set: "training",
                index: 1
            }
        );
        assert!(err.to_string().contains("needs a label"), "{err}");
        let err =
            knn::<Flex>(&val, &train, &KnnConfig::default(), &Default::default()).unwrap_err();
        assert!(matches!(
            err,
            KnnError::Unlabelled {
                set: "validation",
                ..
            }
        ));
    }

    #[test]
    fn matches_a_brute_force_count_on_random_clusters() {
        use crate::rng::{stream, uniform};
        let mut rng = stream(&[7]);
        let centres: Vec<Vec<f32>> = (0..6)
            .map(|_| {
                (0..8)
                    .map(|_| uniform(&mut rng, -1.0, 1.0) as f32)
                    .collect()
            })
            .collect();
        let mut draw = |n: usize| {
            let mut rows = Vec::new();
            for i in 0..n {
                let c = i % 6;
                let v: Vec<f32> = centres[c]
                    .iter()
                    .map(|x| x + uniform(&mut rng, -0.6, 0.6) as f32)
                    .collect();
                rows.push((v, c as u32));
            }
            rows
        };
        let (tr, va) = (draw(120), draw(61));
        let as_ref = |r: &Vec<(Vec<f32>, u32)>| -> Features {
            feats(
                &r.iter()
                    .map(|(v, l)| (v.as_slice(), *l))
                    .collect::<Vec<_>>(),
            )
        };
        let (train, val) = (as_ref(&tr), as_ref(&va));
        let cfg = KnnConfig {
            k: 5,
            temperature: 0.1,
            chunk: 7, // several chunks, the last one partial
        };
        let got = knn::<Flex>(&train, &val, &cfg, &Default::default()).unwrap();
        // Independent f64 brute force.
        let mut hits = 0;
        for q in 0..val.len() {
            let qv = &val.values[q * 8..q * 8 + 8];
            let mut sims: Vec<(f64, u32)> = (0..train.len())
                .map(|t| {
                    let tv = &train.values[t * 8..t * 8 + 8];
                    let s: f64 = qv.iter().zip(tv).map(|(a, b)| *a as f64 * *b as f64).sum();
                    (s, train.labels[t])
                })
                .collect();
            sims.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut votes = [0f64; 6];
            for (s, l) in &sims[..5] {
                votes[*l as usize] += (s / 0.1).exp();
            }
            let best = (0..6).max_by(|a, b| votes[*a].total_cmp(&votes[*b]).then(b.cmp(a)));
            hits += usize::from(best == Some(val.labels[q] as usize));
        }
        let want = 100.0 * hits as f64 / val.len() as f64;
        assert!((got.top1 - want).abs() < 1e-9, "{} vs {want}", got.top1);
        assert!(
            got.top1 > 50.0,
            "clusters should be separable: {}",
            got.top1
        );
        assert!(got.top5 >= got.top1);
    }
}
