//! The network: a ResNet backbone and the Barlow Twins projector.

pub mod init;
pub mod kernels;
pub mod norm;
pub mod precision;
pub mod resnet;
pub mod torchvision;

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

pub use norm::Norm;
pub use precision::Precision;
pub use resnet::{Arch, ResNet, ResNetConfig};

/// Parses the reference's `--projector 8192-8192-8192` notation.
pub fn parse_projector(s: &str) -> Result<Vec<usize>, String> {
    let dims: Result<Vec<usize>, _> = s.split('-').map(|p| p.trim().parse::<usize>()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&x| x > 0) => Ok(d),
        _ => Err(format!("{s:?} is not a projector spec like 8192-8192-8192")),
    }
}

/// Linear (no bias) -> BN -> ReLU for every layer but the last, which is a
/// bare Linear (no bias). The final affine-free BN is in [`crate::loss`].
#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    pub linears: Vec<Linear<B>>,
    pub bns: Vec<BatchNorm<B>>,
}

impl<B: Backend> Projector<B> {
    pub fn new(input: usize, dims: &[usize], device: &B::Device) -> Projector<B> {
        let mut linears = Vec::new();
        let mut bns = Vec::new();
        let mut prev = input;
        for (i, &d) in dims.iter().enumerate() {
            linears.push(LinearConfig::new(prev, d).with_bias(false).init(device));
            if i + 1 < dims.len() {
                bns.push(BatchNormConfig::new(d).init(device));
            }
            prev = d;
        }
        Projector { linears, bns }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_with(x, Norm::Local, Precision::F32)
    }

    /// [`Projector::forward`] with training-mode BatchNorm statistics from
    /// `norm` and the matmuls in `precision` (so is the output: the loss
    /// casts it to f32).
    pub fn forward_with(
        &self,
        mut x: Tensor<B, 2>,
        norm: Norm<'_, B>,
        precision: Precision,
    ) -> Tensor<B, 2> {
        let last = self.linears.len().saturating_sub(1);
        for (i, lin) in self.linears.iter().enumerate() {
            x = precision::linear(lin, x, precision);
            if i < last {
                x = relu(norm::batch_norm(&self.bns[i], x, norm));
            }
        }
        x
    }
}

/// Backbone + projector.
#[derive(Module, Debug)]
pub struct BarlowTwins<B: Backend> {
    pub backbone: ResNet<B>,
    pub projector: Projector<B>,
}

impl<B: Backend> BarlowTwins<B> {
    pub fn new(backbone: &ResNetConfig, projector: &[usize], device: &B::Device) -> BarlowTwins<B> {
        BarlowTwins {
            backbone: backbone.init(device),
            projector: Projector::new(backbone.feature_dim(), projector, device),
        }
    }

    /// [`BarlowTwins::new`] with its weights drawn from `seed` alone
    /// (see [`init`]): the same seed gives the same start on any backend.
    pub fn seeded(
        backbone: &ResNetConfig,
        projector: &[usize],
        seed: u64,
        device: &B::Device,
    ) -> BarlowTwins<B> {
        init::seeded(BarlowTwins::new(backbone, projector, device), seed)
    }

    /// A CRC-32 of every float parameter's bytes, in module order: two
    /// networks with the same weights, bit for bit, have the same checksum
    /// on any backend.
    pub fn weights_checksum(&self) -> u32 {
        struct Checksum(crc32fast::Hasher);
        impl<B: Backend> burn::module::ModuleVisitor<B> for Checksum {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
                self.0.update(param.val().into_data().as_bytes());
            }
        }
        let mut c = Checksum(crc32fast::Hasher::new());
        self.visit(&mut c);
        c.0.finalize()
    }
}

/// u8 NCHW pixels onto the device as they are: one byte a value, a
/// quarter of what f32 would move, from staging memory where the backend
/// has it (pinned host memory on CUDA; nothing on the CPU).
pub fn upload_u8<B: Backend>(
    pixels: &[u8],
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4, burn::tensor::Int> {
    let mut data = burn::tensor::TensorData::new(pixels.to_vec(), shape);
    B::staging(std::iter::once(&mut data), device);
    Tensor::from_data(data, (device, burn::tensor::DType::U8))
}

/// u8 NCHW pixels -> f32 normalised with the reference's mean and std: the
/// bytes are uploaded as u8 ([`upload_u8`]), then looked up on the device
/// in a 3 x 256 table of the loader's own f32 values
/// ([`crate::data::augment::output::write_f32`]). A lookup is exact on every
/// backend, where arithmetic on the device may round differently (fused
/// multiply-add, approximate division): any device gives the bits the CPU
/// loader writes.
pub fn normalise_u8<B: Backend>(
    pixels: &[u8],
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let table = Tensor::<B, 1>::from_floats(normalisation_table().as_slice(), device);
    // Channel c's values start at 256 c. The index is computed in the
    // backend's integer type: a half-precision float cannot hold it.
    let offsets =
        Tensor::<B, 1, burn::tensor::Int>::from_ints([0, 256, 512], device).reshape([1, 3, 1, 1]);
    let bytes = upload_u8::<B>(pixels, shape, device).cast(offsets.dtype());
    let index = (bytes + offsets).reshape([shape.iter().product::<usize>()]);
    table.select(0, index).reshape(shape)
}

/// The loader's f32 value of every byte in each channel, channel-major.
fn normalisation_table() -> &'static [f32; 768] {
    static TABLE: std::sync::OnceLock<[f32; 768]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let planes: Vec<f32> = (0..768).map(|i| (i % 256) as f32).collect();
        let mut table = [0f32; 768];
        crate::data::augment::output::write_f32(&planes, &mut table);
        table
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::optim::LarsConfig;
    use burn::backend::{Autodiff, Flex};

    type AB = Autodiff<Flex>;

    #[test]
    fn projector_spec_parses() {
        assert_eq!(
            parse_projector("8192-8192-8192"),
            Ok(vec![8192, 8192, 8192])
        );
        assert!(parse_projector("8192-x").is_err());
        assert!(parse_projector("").is_err());
    }

    #[test]
    fn pixels_cross_to_the_device_as_u8_bytes() {
        let d = Default::default();
        let px: Vec<u8> = (0..2 * 3 * 4 * 4).map(|i| (i * 37 % 256) as u8).collect();
        let x = upload_u8::<Flex>(&px, [2, 3, 4, 4], &d);
        assert_eq!(x.dtype(), burn::tensor::DType::U8);
        let back: Vec<u8> = x.into_data().to_vec().unwrap();
        assert_eq!(back, px);
    }

    #[test]
    fn normalisation_on_the_device_matches_the_loader_f32_output() {
        let d = Default::default();
        let px: Vec<u8> = (0..2 * 3 * 2 * 2).map(|i| (i * 21) as u8).collect();
        let x: Vec<f32> = normalise_u8::<Flex>(&px, [2, 3, 2, 2], &d)
            .into_data()
            .to_vec()
            .unwrap();
        let mut want = vec![0f32; px.len()];
        for n in 0..2 {
            let s = &px[n * 12..(n + 1) * 12];
            let planes: Vec<f32> = s.iter().map(|&v| v as f32).collect();
            crate::data::augment::output::write_f32(&planes, &mut want[n * 12..(n + 1) * 12]);
        }
        // Bit for bit: the device looks the loader's values up.
        assert_eq!(x, want);
    }

    /// A small network (ResNet-18 width 8, small stem, 32-32 projector)
    /// seeded with `seed`, and two fixed 8 x 3 x 16 x 16 views of a batch.
    pub(crate) fn small_net_and_views(
        seed: u64,
    ) -> (BarlowTwins<AB>, Tensor<AB, 4>, Tensor<AB, 4>) {
        let d = Default::default();
        let cfg = ResNetConfig {
            arch: Arch::Resnet18,
            width: 8,
            small_stem: true,
        };
        let shape = [8, 3, 16, 16];
        let n = shape.iter().product::<usize>();
        let px1: Vec<u8> = (0..n).map(|i| ((i * 7919) % 251) as u8).collect();
        let px2: Vec<u8> = (0..n).map(|i| ((i * 104_729 + 3) % 241) as u8).collect();
        (
            BarlowTwins::seeded(&cfg, &[32, 32], seed, &d),
            normalise_u8::<AB>(&px1, shape, &d),
            normalise_u8::<AB>(&px2, shape, &d),
        )
    }

    #[test]
    fn a_few_lars_steps_lower_the_loss_on_a_fixed_batch() {
        let (mut model, y1, y2) = small_net_and_views(3);
        let mut optim = LarsConfig::new().init();
        let mut pending = crate::train::PendingLosses::default();
        for step in 0..6 {
            let loss;
            (model, loss) = crate::train::barlow_twins_step(
                model,
                &mut optim,
                y1.clone(),
                y2.clone(),
                0.0051,
                0.5,
            );
            pending.push(step, loss);
        }
        let losses: Vec<f32> = pending.read(0).unwrap().iter().map(|l| l.1).collect();
        // The zero-initialised residual gammas are trainable: they moved.
        let g: Vec<f32> = model.backbone.layer1[0]
            .bn2
            .gamma
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(g.iter().any(|&v| v != 0.0), "zero-init gamma never moved");
        assert!(losses[5] < losses[0] * 0.9, "{losses:?}");
    }
}
