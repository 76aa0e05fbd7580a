//! Weights in torchvision's terms: the backbone (and, on request, the
//! projector) as a safetensors file with torchvision's ResNet state-dict
//! names, shapes and layouts ([`export`]), and such a file read back into a
//! network ([`Weights`]).
//!
//! The names, one per tensor:
//! - convolutions: `conv1.weight`, `layer{1-4}.{block}.conv{1-3}.weight`,
//!   `layer{2-4}.0.downsample.0.weight`; OIHW, burn's layout too;
//! - BatchNorms (`bn1`, `layer*.*.bn{1-3}`, `layer*.0.downsample.1`):
//!   `weight` and `bias` (burn's gamma and beta), `running_mean`,
//!   `running_var` (f32) and `num_batches_tracked` (an int64 scalar, 0:
//!   burn does not count batches, and PyTorch reads the count only when a
//!   BatchNorm's momentum is `None`);
//! - the projector, with `with_projector`: the names of the reference's
//!   `nn.Sequential(Linear, BatchNorm1d, ReLU, ..., Linear)`, so the i-th
//!   Linear is `projector.{3i}.weight` (PyTorch's `[out, in]`; burn stores
//!   `[in, out]`) and the BatchNorm after it `projector.{3i+1}.*`;
//! - no `fc.*`: the backbone ends at the pooled features, like a
//!   torchvision ResNet whose `fc` is `nn.Identity()`.
//!
//! The file's metadata has one entry, `barlow`: the backbone config as JSON.
//! Export is deterministic: the same network gives the same bytes.
//!
//! Reading accepts f32, f16, bf16 and f64 weights and infers the
//! architecture from the names and shapes (ResNet-18/34/50, any width; a
//! 3x3 `conv1` means the small stem: stride 1, no max-pool). Every missing
//! or unexpected key and every shape that differs is listed in one error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::resnet::LayerMap;
use super::{Arch, Projector, ResNet, ResNetConfig};
use crate::error::IoError;

/// The metadata key holding the backbone config.
const META: &str = "barlow";

#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: not a safetensors file ({message})")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Arch { path: PathBuf, message: String },
    #[error("{path}: the weights do not fit the network:\n  {}", .problems.join("\n  "))]
    Mismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("writing safetensors: {0}")]
    Write(String),
}

/// One tensor of an export.
struct Entry {
    name: String,
    shape: Vec<usize>,
    dtype: Dtype,
    bytes: Vec<u8>,
}

impl Entry {
    fn f32<B: Backend, const D: usize>(name: String, t: Tensor<B, D>) -> Entry {
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>();
        Entry {
            name,
            shape,
            dtype: Dtype::F32,
            bytes: data.iter::<f32>().flat_map(f32::to_le_bytes).collect(),
        }
    }
}

/// Collects the tensors of the layers it is shown.
#[derive(Default)]
struct Collect(Vec<Entry>);

impl Collect {
    fn push_bn<B: Backend>(&mut self, name: &str, bn: &BatchNorm<B>) {
        self.0.extend([
            Entry::f32(format!("{name}.weight"), bn.gamma.val()),
            Entry::f32(format!("{name}.bias"), bn.beta.val()),
            Entry::f32(format!("{name}.running_mean"), bn.running_mean.value()),
            Entry::f32(format!("{name}.running_var"), bn.running_var.value()),
            Entry {
                name: format!("{name}.num_batches_tracked"),
                shape: Vec::new(),
                dtype: Dtype::I64,
                bytes: 0i64.to_le_bytes().to_vec(),
            },
        ]);
    }
}

impl<B: Backend> LayerMap<B> for Collect {
    fn conv(&mut self, name: &str, conv: Conv2d<B>) -> Conv2d<B> {
        self.0
            .push(Entry::f32(format!("{name}.weight"), conv.weight.val()));
        if let Some(b) = &conv.bias {
            self.0.push(Entry::f32(format!("{name}.bias"), b.val()));
        }
        conv
    }

    fn bn(&mut self, name: &str, bn: BatchNorm<B>) -> BatchNorm<B> {
        self.push_bn(name, &bn);
        bn
    }
}

/// The safetensors bytes of `backbone` (built with `cfg`) and, if given,
/// `projector`, under torchvision's names (see the module docs).
pub fn export<B: Backend>(
    backbone: &ResNet<B>,
    cfg: &ResNetConfig,
    projector: Option<&Projector<B>>,
) -> Result<Vec<u8>, InteropError> {
    let mut c = Collect::default();
    backbone.clone().map_layers(&mut c);
    if let Some(p) = projector {
        for (i, lin) in p.linears.iter().enumerate() {
            let name = format!("projector.{}", 3 * i);
            c.0.push(Entry::f32(
                format!("{name}.weight"),
                lin.weight.val().transpose(),
            ));
            if let Some(b) = &lin.bias {
                c.0.push(Entry::f32(format!("{name}.bias"), b.val()));
            }
        }
        for (i, bn) in p.bns.iter().enumerate() {
            c.push_bn(&format!("projector.{}", 3 * i + 1), bn);
        }
    }
    let views =
        c.0.iter()
            .map(|e| {
                TensorView::new(e.dtype, e.shape.clone(), &e.bytes)
                    .map(|v| (e.name.clone(), v))
                    .map_err(|err| InteropError::Write(format!("{}: {err}", e.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
    let meta = serde_json::to_string(cfg).map_err(|e| InteropError::Write(e.to_string()))?;
    // One metadata entry only: the crate keeps metadata in a HashMap, whose
    // order (and so the bytes) would vary between runs with two.
    let info = std::collections::HashMap::from([(META.to_string(), meta)]);
    safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| InteropError::Write(e.to_string()))
}

/// A safetensors file of torchvision-named weights, read into memory.
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Every tensor's shape, from the header read once.
    shapes: std::collections::HashMap<String, Vec<usize>>,
}

impl Weights {
    /// Reads `path` and checks that it is a safetensors file.
    pub fn read(path: &Path) -> Result<Weights, InteropError> {
        let bytes = std::fs::read(path).map_err(IoError::at(path))?;
        let mut w = Weights {
            path: path.to_path_buf(),
            bytes,
            shapes: Default::default(),
        };
        let shapes = w
            .parse()?
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        w.shapes = shapes;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(&self) -> Result<SafeTensors<'_>, InteropError> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| InteropError::Format {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    fn arch_err(&self, message: String) -> InteropError {
        InteropError::Arch {
            path: self.path.clone(),
            message,
        }
    }

    /// The backbone these weights are for, from their names and shapes.
    pub fn backbone_config(&self) -> Result<ResNetConfig, InteropError> {
        let conv1 = self.shape("conv1.weight").ok_or_else(|| {
            self.arch_err("no conv1.weight: not a torchvision ResNet state dict".into())
        })?;
        let [width, 3, k, _] = conv1[..] else {
            return Err(self.arch_err(format!(
                "conv1.weight has shape {conv1:?}, not [width, 3, k, k]"
            )));
        };
        let small_stem = match k {
            7 => false,
            3 => true,
            k => {
                return Err(self.arch_err(format!(
                    "conv1 is {k}x{k}: a ResNet stem is 7x7 (or 3x3, the small stem)"
                )));
            }
        };
        let bottleneck = self.shape("layer1.0.conv3.weight").is_some();
        let mut blocks = [0usize; 4];
        for (i, n) in blocks.iter_mut().enumerate() {
            while self
                .shape(&format!("layer{}.{}.conv1.weight", i + 1, *n))
                .is_some()
            {
                *n += 1;
            }
        }
        let arch = match (bottleneck, blocks) {
            (false, [2, 2, 2, 2]) => Arch::Resnet18,
            (false, [3, 4, 6, 3]) => Arch::Resnet34,
            (true, [3, 4, 6, 3]) => Arch::Resnet50,
            _ => {
                return Err(self.arch_err(format!(
                    "{} blocks of {blocks:?} per stage: not ResNet-18, 34 or 50",
                    if bottleneck { "bottleneck" } else { "basic" }
                )));
            }
        };
        Ok(ResNetConfig {
            arch,
            width,
            small_stem,
        })
    }

    /// The projector's widths, when the file has one (`--with-projector`).
    pub fn projector_dims(&self) -> Option<Vec<usize>> {
        let mut dims = Vec::new();
        while let Some(s) = self.shape(&format!("projector.{}.weight", 3 * dims.len())) {
            dims.push(*s.first()?);
        }
        (!dims.is_empty()).then_some(dims)
    }

    /// `net` with every weight replaced by the file's. Keys other than the
    /// backbone's are refused, but for `fc.*` (a classifier, ignored) and
    /// `projector.*`.
    pub fn load_backbone<B: Backend>(
        &self,
        net: ResNet<B>,
        device: &B::Device,
    ) -> Result<ResNet<B>, InteropError> {
        let st = self.parse()?;
        let mut load = Load::new(&st, device);
        let net = net.map_layers(&mut load);
        load.finish(&self.path, &["fc.", "projector."])?;
        Ok(net)
    }

    /// `backbone` and `projector` with every weight replaced by the file's,
    /// which must hold both (ignoring `fc.*`).
    pub fn load_model<B: Backend>(
        &self,
        backbone: ResNet<B>,
        projector: Projector<B>,
        device: &B::Device,
    ) -> Result<(ResNet<B>, Projector<B>), InteropError> {
        let st = self.parse()?;
        let mut load = Load::new(&st, device);
        let backbone = backbone.map_layers(&mut load);
        let Projector { linears, bns } = projector;
        let linears = linears
            .into_iter()
            .enumerate()
            .map(|(i, mut lin)| {
                let name = format!("projector.{}", 3 * i);
                lin.weight = load.param_t(&format!("{name}.weight"), lin.weight);
                lin.bias = lin.bias.map(|b| load.param(&format!("{name}.bias"), b));
                lin
            })
            .collect();
        let bns = bns
            .into_iter()
            .enumerate()
            .map(|(i, bn)| load.bn(&format!("projector.{}", 3 * i + 1), bn))
            .collect();
        load.finish(&self.path, &["fc."])?;
        Ok((backbone, Projector { linears, bns }))
    }
}

/// Replaces the tensors of the layers it is shown by the file's, noting
/// what is missing, misshapen or left over.
struct Load<'a, B: Backend> {
    st: &'a SafeTensors<'a>,
    device: &'a B::Device,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

impl<'a, B: Backend> Load<'a, B> {
    fn new(st: &'a SafeTensors<'a>, device: &'a B::Device) -> Self {
        Load {
            st,
            device,
            used: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// The file's `name` as a tensor of shape `want`, or a noted problem.
    fn take<const D: usize>(&mut self, name: &str, want: [usize; D]) -> Option<Tensor<B, D>> {
        let view = match self.st.tensor(name) {
            Ok(v) => v,
            Err(_) => {
                self.problems.push(format!("missing: {name} {want:?}"));
                return None;
            }
        };
        self.used.insert(name.to_string());
        if view.shape() != want {
            self.problems.push(format!(
                "{name}: shape {:?} in the file, {want:?} in the network",
                view.shape()
            ));
            return None;
        }
        match to_f32(&view) {
            Ok(v) => Some(Tensor::from_data(TensorData::new(v, want), self.device)),
            Err(e) => {
                self.problems.push(format!("{name}: {e}"));
                None
            }
        }
    }

    /// `p` with the file's `name` as its value, keeping its id and whether
    /// it is trained.
    fn param<const D: usize>(&mut self, name: &str, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let old = p.val();
        match self.take(name, old.dims()) {
            Some(t) => Param::initialized(p.id, t.set_require_grad(old.is_require_grad())),
            None => p,
        }
    }

    /// [`Load::param`] for a Linear weight: the file holds it transposed.
    fn param_t(&mut self, name: &str, p: Param<Tensor<B, 2>>) -> Param<Tensor<B, 2>> {
        let old = p.val();
        let [i, o] = old.dims();
        match self.take(name, [o, i]) {
            Some(t) => {
                Param::initialized(p.id, t.transpose().set_require_grad(old.is_require_grad()))
            }
            None => p,
        }
    }

    fn running(&mut self, name: &str, r: RunningState<Tensor<B, 1>>) -> RunningState<Tensor<B, 1>> {
        match self.take(name, r.value().dims()) {
            Some(t) => RunningState::new(t),
            None => r,
        }
    }

    /// Every key not taken is a problem, but those under `ignored` prefixes.
    fn finish(self, path: &Path, ignored: &[&str]) -> Result<(), InteropError> {
        let mut problems = self.problems;
        let mut names: Vec<&str> = self.st.names();
        names.sort_unstable();
        for name in names {
            let skip = self.used.contains(name)
                || name.ends_with(".num_batches_tracked")
                || ignored.iter().any(|p| name.starts_with(p));
            if !skip {
                problems.push(format!("unexpected: {name}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InteropError::Mismatch {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

impl<B: Backend> LayerMap<B> for Load<'_, B> {
    fn conv(&mut self, name: &str, mut conv: Conv2d<B>) -> Conv2d<B> {
        conv.weight = self.param(&format!("{name}.weight"), conv.weight);
        conv.bias = conv.bias.map(|b| self.param(&format!("{name}.bias"), b));
        conv
    }

    fn bn(&mut self, name: &str, mut bn: BatchNorm<B>) -> BatchNorm<B> {
        bn.gamma = self.param(&format!("{name}.weight"), bn.gamma);
        bn.beta = self.param(&format!("{name}.bias"), bn.beta);
        bn.running_mean = self.running(&format!("{name}.running_mean"), bn.running_mean);
        bn.running_var = self.running(&format!("{name}.running_var"), bn.running_var);
        bn
    }
}

/// The values of a float tensor of the file as f32 (f16, bf16 and f64 are
/// converted).
fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let b = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a) as f32
            })
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| burn::tensor::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| burn::tensor::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} is not a float type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_and_double_precision_weights_are_read_as_f32() {
        let want = [1.5f32, -0.25, 3.0];
        let f16: Vec<u8> = want
            .iter()
            .flat_map(|&v| burn::tensor::f16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let bf16: Vec<u8> = want
            .iter()
            .flat_map(|&v| burn::tensor::bf16::from_f32(v).to_bits().to_le_bytes())
            .collect();
        let f64: Vec<u8> = want
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect();
        for (dtype, bytes) in [(Dtype::F16, &f16), (Dtype::BF16, &bf16), (Dtype::F64, &f64)] {
            let view = TensorView::new(dtype, vec![3], bytes).unwrap();
            assert_eq!(to_f32(&view).unwrap(), want, "{dtype:?}");
        }
        let ints = 7i64.to_le_bytes();
        let view = TensorView::new(Dtype::I64, vec![1], &ints).unwrap();
        assert!(to_f32(&view).unwrap_err().contains("not a float"));
    }
}
