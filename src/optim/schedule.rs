//! The reference's learning-rate schedule (`docs/method.md`), as the reference code computes it every
//! step: linear warm-up from 0 to `base` over the warm-up steps, then a
//! half cosine from `base` down to `final_fraction * base` at the last step.
//! (burn's own schedulers cap the rate at 1.0 and restart; this one does
//! neither.)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak rate of the weights group (reference: 0.2 x batch / 256).
    pub base_lr_weights: f64,
    /// Peak rate of the biases-and-BN group (reference: 0.0048 x batch / 256).
    pub base_lr_biases: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// The rate at the end, as a fraction of the peak (reference: 0.001).
    pub final_fraction: f64,
}

impl WarmupCosine {
    /// The reference's defaults for a global batch of `batch_size`, `epochs`
    /// epochs of `steps_per_epoch` steps: 10 warm-up epochs, or a tenth of
    /// the run's steps when that is fewer (any run under 100 epochs; none
    /// under 10 steps). See `docs/method.md`.
    pub fn reference(
        batch_size: usize,
        epochs: u64,
        steps_per_epoch: u64,
        lr_weights: f64,
        lr_biases: f64,
    ) -> WarmupCosine {
        let base = batch_size as f64 / 256.0;
        let total = epochs * steps_per_epoch;
        let warmup = (10 * steps_per_epoch).min(total / 10);
        WarmupCosine {
            base_lr_weights: lr_weights * base,
            base_lr_biases: lr_biases * base,
            warmup_steps: warmup,
            total_steps: total.max(1),
            final_fraction: 0.001,
        }
    }

    /// The multiplier of the peak rate at `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let q = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        q + self.final_fraction * (1.0 - q)
    }

    /// `(lr_weights, lr_biases)` at `step`.
    pub fn rates(&self, step: u64) -> (f64, f64) {
        let f = self.factor(step);
        (f * self.base_lr_weights, f * self.base_lr_biases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_at_start_end_of_warmup_middle_and_end() {
        // Batch 2048 (base 8), 1000 epochs of 625 steps: the paper's run.
        let s = WarmupCosine::reference(2048, 1000, 625, 0.2, 0.0048);
        assert_eq!(s.warmup_steps, 6250);
        assert_eq!(s.total_steps, 625_000);
        assert_eq!(s.rates(0), (0.0, 0.0));
        // Half-way through warm-up: half the peak.
        let (w, b) = s.rates(3125);
        assert!((w - 0.8).abs() < 1e-12 && (b - 0.0192).abs() < 1e-12);
        // End of warm-up: the peak, 0.2 x 8 and 0.0048 x 8.
        let (w, b) = s.rates(6250);
        assert!(
            (w - 1.6).abs() < 1e-12 && (b - 0.0384).abs() < 1e-12,
            "{w} {b}"
        );
        // Middle of the cosine: (1 + 0.001) / 2 of the peak.
        let mid = 6250 + (625_000 - 6250) / 2;
        assert!((s.factor(mid) - 0.5005).abs() < 1e-9, "{}", s.factor(mid));
        // Last step: 0.001 of the peak; never below it.
        assert!((s.factor(625_000) - 0.001).abs() < 1e-12);
        assert!((s.factor(700_000) - 0.001).abs() < 1e-12);
        // Monotone: up during warm-up, down after.
        assert!(s.factor(6249) < s.factor(6250));
        assert!(s.factor(100_000) > s.factor(100_001));
    }
}
