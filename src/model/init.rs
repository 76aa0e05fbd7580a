//! Seeded initial weights, drawn on the host from a run's own RNG.
//!
//! Guarantee: the initial weights depend on the seed and the architecture
//! alone: not on the backend, the device, the precision, nor on anything
//! else that draws random numbers in the same process (burn's `B::seed` is a
//! process-wide RNG that other threads can draw from between a seed and an
//! init). A CPU and a CUDA run with the same seed start from the same bits.
//!
//! The distributions are torchvision's: convolution weights (rank 4,
//! `[out, in, k, k]`) `kaiming_normal_(mode="fan_out", nonlinearity="relu")`;
//! linear weights (rank 2, burn's `[in, out]`) PyTorch's default
//! `U(-1/sqrt(in), 1/sqrt(in))`. Rank-1 parameters (BatchNorm's gamma and
//! beta, zero-init residual gammas included) keep the constants they were
//! built with.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Redraws every convolution and linear weight of `module` from `seed`.
pub fn seeded<B: Backend, M: Module<B>>(module: M, seed: u64) -> M {
    let mut mapper = Seeded {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed_1417_0000_0000),
    };
    module.map(&mut mapper)
}

struct Seeded {
    rng: Xoshiro256PlusPlus,
}

impl<B: Backend> ModuleMapper<B> for Seeded {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let distribution = match D {
            4 => {
                let fan_out = (dims[0] * dims[2] * dims[3]).max(1) as f64;
                Distribution::Normal(0.0, (2.0 / fan_out).sqrt())
            }
            2 => {
                let bound = 1.0 / (dims[0].max(1) as f64).sqrt();
                Distribution::Uniform(-bound, bound)
            }
            _ => return Param::from_mapped_value(id, tensor, mapper),
        };
        let data = TensorData::random::<f32, _, _>(dims, distribution, &mut self.rng);
        let grad = tensor.is_require_grad();
        let fresh = Tensor::<B, D>::from_data(data, &tensor.device());
        let fresh = if grad { fresh.require_grad() } else { fresh };
        Param::from_mapped_value(id, fresh, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, BarlowTwins, ResNetConfig};
    use burn::backend::{Autodiff, Flex};
    use burn::module::ModuleVisitor;

    type AB = Autodiff<Flex>;

    /// Every float parameter's values, in module order.
    struct Values(Vec<Vec<f32>>);
    impl<B: Backend> ModuleVisitor<B> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .push(param.val().into_data().to_vec().unwrap_or_default());
        }
    }

    fn values<B: Backend>(m: &BarlowTwins<B>) -> Vec<Vec<f32>> {
        let mut v = Values(Vec::new());
        m.visit(&mut v);
        v.0
    }

    fn cfg() -> ResNetConfig {
        ResNetConfig {
            arch: Arch::Resnet18,
            width: 8,
            small_stem: true,
        }
    }

    #[test]
    fn the_seed_alone_decides_the_weights() {
        let d = Default::default();
        let a = seeded(BarlowTwins::<AB>::new(&cfg(), &[32, 16], &d), 7);
        // Draw from burn's global RNG in between: it must not matter.
        let _noise = Tensor::<Flex, 1>::random([1000], Distribution::Default, &d);
        let b = seeded(BarlowTwins::<AB>::new(&cfg(), &[32, 16], &d), 7);
        let c = seeded(BarlowTwins::<AB>::new(&cfg(), &[32, 16], &d), 8);
        assert_eq!(values(&a), values(&b));
        assert_ne!(values(&a), values(&c));
    }

    #[test]
    fn weights_follow_torchvision_and_constants_stay() {
        let d = Default::default();
        let m = seeded(BarlowTwins::<AB>::new(&cfg(), &[64, 32], &d), 1);
        // layer1.0.conv1: [8, 8, 3, 3], fan_out 72.
        let w: Vec<f32> = m.backbone.layer1[0]
            .conv1
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        assert!((var / (2.0 / 72.0) - 1.0).abs() < 0.25, "var {var}");
        // projector.linears[0]: [64 (resnet18 width 8 features), 64], bound 1/8.
        let l: Vec<f32> = m.projector.linears[0]
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(l.iter().all(|v| v.abs() <= 0.125));
        assert!(l.iter().any(|v| v.abs() > 0.1));
        // Zero-init residual gamma and BN beta unchanged; gradients still on.
        let g = &m.backbone.layer1[0].bn2.gamma;
        assert!(
            g.val()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(g.val().is_require_grad());
        assert!(m.backbone.layer1[0].conv1.weight.val().is_require_grad());
    }
}
