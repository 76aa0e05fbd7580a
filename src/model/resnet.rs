//! ResNet-18/34/50 as torchvision builds them (ResNet v1.5: the stride of a
//! bottleneck sits on its 3x3 conv; downsample = 1x1 conv + BN), with
//! `zero_init_residual` (the last BN gamma of every block starts at 0) and
//! no classifier: the output is the pooled feature vector.
//!
//! Field names follow torchvision's state-dict keys one to one (`conv1`,
//! `bn1`, `layer1.0.conv2`, `layer2.0.downsample...`), so an exporter maps
//! keys without renaming anything but burn's `gamma`/`beta` (torchvision's
//! `weight`/`bias`) and the downsample pair (`downsample.0`/`.1`).
//!
//! A `small` stem (3x3 stride-1 conv, no max-pool) and a base `width` other
//! than 64 give the narrow, low-resolution variants meant for CPU runs.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::norm::{Norm, batch_norm};
use super::precision::{Precision, conv as conv_in};

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
}

impl crate::Choice for Arch {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Arch::Resnet18, "resnet18"),
        (Arch::Resnet34, "resnet34"),
        (Arch::Resnet50, "resnet50"),
    ];
}

impl Arch {
    fn blocks(self) -> [usize; 4] {
        match self {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet34 | Arch::Resnet50 => [3, 4, 6, 3],
        }
    }

    fn bottleneck(self) -> bool {
        self == Arch::Resnet50
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub arch: Arch,
    /// Channels of the stem and of layer1 (64 in torchvision).
    pub width: usize,
    /// 3x3 stride-1 stem without max-pool, for small images.
    pub small_stem: bool,
}

impl ResNetConfig {
    pub fn new(arch: Arch) -> ResNetConfig {
        ResNetConfig {
            arch,
            width: 64,
            small_stem: false,
        }
    }

    /// Size of the pooled feature vector.
    pub fn feature_dim(&self) -> usize {
        let expansion = if self.arch.bottleneck() { 4 } else { 1 };
        self.width * 8 * expansion
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let w = self.width;
        let conv1 = if self.small_stem {
            conv(3, w, 3, 1, 1, device)
        } else {
            conv(3, w, 7, 2, 3, device)
        };
        let expansion = if self.arch.bottleneck() { 4 } else { 1 };
        let mut in_ch = w;
        // Stage `stage` (0..4): its blocks, the first one strided (but in
        // the first stage) and widening from the previous stage's output.
        let mut layer = |stage: usize| {
            let planes = w << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let n = self.arch.blocks()[stage];
            (0..n)
                .map(|b| {
                    let s = if b == 0 { stride } else { 1 };
                    let block = Block::new(in_ch, planes, s, self.arch.bottleneck(), device);
                    in_ch = planes * expansion;
                    block
                })
                .collect::<Vec<_>>()
        };
        ResNet {
            conv1,
            bn1: bn(w, false, device),
            layer1: layer(0),
            layer2: layer(1),
            layer3: layer(2),
            layer4: layer(3),
            maxpool: (!self.small_stem).then(|| {
                MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init()
            }),
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
        }
    }
}

/// torchvision: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, no bias.
fn conv<B: Backend>(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

/// BatchNorm with gamma 1 (0 for the last BN of a block), beta 0.
fn bn<B: Backend>(c: usize, zero_gamma: bool, device: &B::Device) -> BatchNorm<B> {
    let mut b = BatchNormConfig::new(c).init(device);
    if zero_gamma {
        // A fresh parameter (not `gamma.map`, which would drop the
        // gradient requirement on autodiff backends and freeze it).
        b.gamma = Initializer::Zeros.init([c], device);
    }
    b
}

/// `downsample.0` (1x1 conv) and `downsample.1` (BN) in torchvision.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    pub conv: Conv2d<B>,
    pub bn: BatchNorm<B>,
}

/// A basic block (conv1, conv2) or a bottleneck (conv1, conv2, conv3).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub conv1: Conv2d<B>,
    pub bn1: BatchNorm<B>,
    pub conv2: Conv2d<B>,
    pub bn2: BatchNorm<B>,
    pub conv3: Option<Conv2d<B>>,
    pub bn3: Option<BatchNorm<B>>,
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> Block<B> {
    fn new(
        in_ch: usize,
        planes: usize,
        stride: usize,
        bottleneck: bool,
        device: &B::Device,
    ) -> Block<B> {
        let out_ch = if bottleneck { planes * 4 } else { planes };
        let downsample = (stride != 1 || in_ch != out_ch).then(|| Downsample {
            conv: conv(in_ch, out_ch, 1, stride, 0, device),
            bn: bn(out_ch, false, device),
        });
        if bottleneck {
            Block {
                conv1: conv(in_ch, planes, 1, 1, 0, device),
                bn1: bn(planes, false, device),
                conv2: conv(planes, planes, 3, stride, 1, device),
                bn2: bn(planes, false, device),
                conv3: Some(conv(planes, out_ch, 1, 1, 0, device)),
                bn3: Some(bn(out_ch, true, device)),
                downsample,
            }
        } else {
            Block {
                conv1: conv(in_ch, planes, 3, stride, 1, device),
                bn1: bn(planes, false, device),
                conv2: conv(planes, planes, 3, 1, 1, device),
                bn2: bn(planes, true, device),
                conv3: None,
                bn3: None,
                downsample,
            }
        }
    }

    /// The block on `x`; its convolutions compute in `precision`, its
    /// BatchNorms in f32 (see [`super::precision`]).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        norm: Norm<'_, B>,
        precision: Precision,
    ) -> Tensor<B, 4> {
        let c = |conv: &Conv2d<B>, x| conv_in(conv, x, precision);
        let identity = match &self.downsample {
            Some(d) => batch_norm(&d.bn, c(&d.conv, x.clone()), norm),
            None => x.clone(),
        };
        let mut out = relu(batch_norm(&self.bn1, c(&self.conv1, x), norm));
        out = batch_norm(&self.bn2, c(&self.conv2, out), norm);
        if let (Some(c3), Some(b3)) = (&self.conv3, &self.bn3) {
            out = batch_norm(b3, c(c3, relu(out)), norm);
        }
        relu(out + identity)
    }
}

/// The backbone: input `[N, 3, H, W]` (normalised), output `[N, feature_dim]`.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    pub conv1: Conv2d<B>,
    pub bn1: BatchNorm<B>,
    pub layer1: Vec<Block<B>>,
    pub layer2: Vec<Block<B>>,
    pub layer3: Vec<Block<B>>,
    pub layer4: Vec<Block<B>>,
    maxpool: Option<MaxPool2d>,
    avgpool: AdaptiveAvgPool2d,
}

impl<B: Backend> ResNet<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_with(x, Norm::Local, Precision::F32)
    }

    /// [`ResNet::forward`] with training-mode BatchNorm statistics from
    /// `norm` (the global batch's, for data-parallel peers) and the
    /// convolutions in `precision` (so are the features it returns).
    pub fn forward_with(
        &self,
        x: Tensor<B, 4>,
        norm: Norm<'_, B>,
        precision: Precision,
    ) -> Tensor<B, 2> {
        let stem = conv_in(&self.conv1, x, precision);
        let mut x = relu(batch_norm(&self.bn1, stem, norm));
        if let Some(p) = &self.maxpool {
            x = p.forward(x);
        }
        for layer in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            for block in layer {
                x = block.forward(x, norm, precision);
            }
        }
        let [n, c, _, _] = x.dims();
        self.avgpool.forward(x).reshape([n, c])
    }
}

/// Something that takes every conv and BatchNorm of a ResNet by value,
/// under its torchvision state-dict name (`layer2.0.downsample.0`, without
/// the `.weight` suffix), and gives it back: read for export, replaced for
/// import. [`ResNet::map_layers`] calls it in state-dict order.
pub(crate) trait LayerMap<B: Backend> {
    fn conv(&mut self, name: &str, conv: Conv2d<B>) -> Conv2d<B>;
    fn bn(&mut self, name: &str, bn: BatchNorm<B>) -> BatchNorm<B>;
}

impl<B: Backend> ResNet<B> {
    /// Passes every conv and BatchNorm through `m` (see [`LayerMap`]).
    pub(crate) fn map_layers(self, m: &mut impl LayerMap<B>) -> ResNet<B> {
        let conv1 = m.conv("conv1", self.conv1);
        let bn1 = m.bn("bn1", self.bn1);
        let mut stage = |i: usize, blocks: Vec<Block<B>>| -> Vec<Block<B>> {
            blocks
                .into_iter()
                .enumerate()
                .map(|(j, b)| b.map_layers(&format!("layer{i}.{j}"), m))
                .collect()
        };
        let layer1 = stage(1, self.layer1);
        let layer2 = stage(2, self.layer2);
        let layer3 = stage(3, self.layer3);
        let layer4 = stage(4, self.layer4);
        ResNet {
            conv1,
            bn1,
            layer1,
            layer2,
            layer3,
            layer4,
            maxpool: self.maxpool,
            avgpool: self.avgpool,
        }
    }
}

impl<B: Backend> Block<B> {
    fn map_layers(self, prefix: &str, m: &mut impl LayerMap<B>) -> Block<B> {
        let conv1 = m.conv(&format!("{prefix}.conv1"), self.conv1);
        let bn1 = m.bn(&format!("{prefix}.bn1"), self.bn1);
        let conv2 = m.conv(&format!("{prefix}.conv2"), self.conv2);
        let bn2 = m.bn(&format!("{prefix}.bn2"), self.bn2);
        let conv3 = self.conv3.map(|c| m.conv(&format!("{prefix}.conv3"), c));
        let bn3 = self.bn3.map(|b| m.bn(&format!("{prefix}.bn3"), b));
        let downsample = self.downsample.map(|d| Downsample {
            conv: m.conv(&format!("{prefix}.downsample.0"), d.conv),
            bn: m.bn(&format!("{prefix}.downsample.1"), d.bn),
        });
        Block {
            conv1,
            bn1,
            conv2,
            bn2,
            conv3,
            bn3,
            downsample,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn count(m: &ResNet<B>) -> usize {
        m.num_params()
    }

    #[test]
    fn parameter_counts_match_torchvision() {
        // torchvision's parameter counts without the fc layer (11,689,512 -
        // 513,000; 21,797,672 - 513,000; 25,557,032 - 2,049,000), plus the
        // BN running mean and variance, which burn's `num_params` counts:
        // 2 x (4,800; 8,512; 26,560) BN channels.
        let d = Default::default();
        assert_eq!(
            count(&ResNetConfig::new(Arch::Resnet18).init::<B>(&d)),
            11_176_512 + 9_600
        );
        assert_eq!(
            count(&ResNetConfig::new(Arch::Resnet34).init::<B>(&d)),
            21_284_672 + 17_024
        );
        assert_eq!(
            count(&ResNetConfig::new(Arch::Resnet50).init::<B>(&d)),
            23_508_032 + 53_120
        );
    }

    #[test]
    fn shapes_and_zero_init_residual() {
        let d = Default::default();
        let cfg = ResNetConfig {
            arch: Arch::Resnet18,
            width: 8,
            small_stem: true,
        };
        let m = cfg.init::<B>(&d);
        let y = m.forward(Tensor::ones([2, 3, 32, 32], &d));
        assert_eq!(y.dims(), [2, cfg.feature_dim()]);
        assert_eq!(cfg.feature_dim(), 64);
        let g: Vec<f32> = m.layer1[0].bn2.gamma.val().into_data().to_vec().unwrap();
        assert!(g.iter().all(|&v| v == 0.0), "last BN gamma starts at 0");
        let g: Vec<f32> = m.layer1[0].bn1.gamma.val().into_data().to_vec().unwrap();
        assert!(g.iter().all(|&v| v == 1.0));
        let r50 = ResNetConfig::new(Arch::Resnet50).init::<B>(&d);
        assert!(r50.layer1[0].bn3.is_some() && r50.layer1[0].downsample.is_some());
        assert_eq!(ResNetConfig::new(Arch::Resnet50).feature_dim(), 2048);
    }
}
