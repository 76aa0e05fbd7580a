//! torchvision interop: weights written by torchvision give torchvision's
//! features here, exports carry torchvision's names and shapes, and export
//! -> import -> export is byte-identical. The fixtures come from
//! `tests/torchvision/make_fixtures.py` (run by hand).

use std::path::{Path, PathBuf};

use barlow::model::torchvision::{InteropError, Weights, export};
use barlow::model::{Arch, BarlowTwins, ResNetConfig};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/torchvision")
        .join(name)
}

/// A tensor of a safetensors file (f32) and its shape.
fn tensor(bytes: &[u8], name: &str) -> (Vec<f32>, Vec<usize>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let v = st.tensor(name).unwrap();
    let values = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (values, v.shape().to_vec())
}

#[test]
fn torchvision_weights_give_torchvision_features() {
    for (name, want_cfg) in [
        (
            "r18_w8",
            ResNetConfig {
                arch: Arch::Resnet18,
                width: 8,
                small_stem: false,
            },
        ),
        (
            "r50_w4_small",
            ResNetConfig {
                arch: Arch::Resnet50,
                width: 4,
                small_stem: true,
            },
        ),
    ] {
        let w = Weights::read(&fixture(&format!("{name}.safetensors"))).unwrap();
        let cfg = w.backbone_config().unwrap();
        assert_eq!(cfg, want_cfg, "{name}");
        let d = Default::default();
        let net = w.load_backbone(cfg.init::<B>(&d), &d).unwrap();
        let io = std::fs::read(fixture(&format!("{name}.io.safetensors"))).unwrap();
        let (x, xs) = tensor(&io, "input");
        let (want, ys) = tensor(&io, "output");
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [xs[0], xs[1], xs[2], xs[3]]), &d);
        // Flex without autodiff: BatchNorm uses its running statistics, as
        // torchvision's eval mode does.
        let y = net.forward(x);
        assert_eq!(y.dims().to_vec(), ys, "{name}");
        let got: Vec<f32> = y.into_data().to_vec().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{name}: max |difference| from torchvision {worst:e}");
        assert!(worst < 1e-4, "{name}: max |difference| {worst}");
        // The comparison can fail: the untrained network is far off.
        let fresh: Vec<f32> = cfg
            .init::<B>(&d)
            .forward(Tensor::ones([2, 3, xs[2], xs[3]], &d))
            .into_data()
            .to_vec()
            .unwrap();
        assert_ne!(fresh, want);
    }
}

#[test]
fn exports_carry_torchvision_names_shapes_and_dtypes() {
    let d = Default::default();
    for (arch, file) in [
        (Arch::Resnet18, "resnet18.keys"),
        (Arch::Resnet34, "resnet34.keys"),
        (Arch::Resnet50, "resnet50.keys"),
    ] {
        let cfg = ResNetConfig::new(arch);
        let bytes = export(&cfg.init::<B>(&d), &cfg, None).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut got: Vec<String> = st
            .tensors()
            .iter()
            .map(|(name, v)| {
                let dtype = match v.dtype() {
                    safetensors::Dtype::F32 => "float32",
                    safetensors::Dtype::I64 => "int64",
                    other => panic!("{name}: {other:?}"),
                };
                format!("{name} {:?} {dtype}", v.shape())
            })
            .collect();
        got.sort();
        let text = std::fs::read_to_string(fixture(file)).unwrap();
        let mut want: Vec<String> = text.lines().map(str::to_string).collect();
        want.sort();
        assert_eq!(got, want, "{arch:?}");
    }
}

#[test]
fn export_import_export_is_byte_identical() {
    let d = Default::default();
    let cfg = ResNetConfig {
        arch: Arch::Resnet50,
        width: 4,
        small_stem: true,
    };
    let a = BarlowTwins::<B>::seeded(&cfg, &[24, 16], 1, &d);
    let first = export(&a.backbone, &cfg, Some(&a.projector)).unwrap();
    // The projector is there in PyTorch's layout: [out, in].
    let (_, shape) = tensor(&first, "projector.0.weight");
    assert_eq!(shape, vec![24, cfg.feature_dim()]);
    let (_, shape) = tensor(&first, "projector.3.weight");
    assert_eq!(shape, vec![16, 24]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.safetensors");
    std::fs::write(&path, &first).unwrap();
    let w = Weights::read(&path).unwrap();
    assert_eq!(w.backbone_config().unwrap(), cfg);
    assert_eq!(w.projector_dims(), Some(vec![24, 16]));
    let b = BarlowTwins::<B>::seeded(&cfg, &[24, 16], 2, &d);
    let before = export(&b.backbone, &cfg, Some(&b.projector)).unwrap();
    assert_ne!(before, first, "two seeds, two networks");
    let (backbone, projector) = w.load_model(b.backbone, b.projector, &d).unwrap();
    let again = export(&backbone, &cfg, Some(&projector)).unwrap();
    assert!(
        again == first,
        "export -> import -> export changed the bytes"
    );
    // Backbone only, the same way.
    let c = BarlowTwins::<B>::seeded(&cfg, &[24, 16], 3, &d);
    let backbone = w.load_backbone(c.backbone, &d).unwrap();
    assert_eq!(
        export(&backbone, &cfg, None).unwrap(),
        export(&a.backbone, &cfg, None).unwrap()
    );
}

#[test]
fn weights_that_do_not_fit_are_refused_listing_every_key() {
    let d = Default::default();
    let w = Weights::read(&fixture("r18_w8.safetensors")).unwrap();
    let wider = ResNetConfig {
        arch: Arch::Resnet18,
        width: 16,
        small_stem: false,
    };
    match w.load_backbone(wider.init::<B>(&d), &d) {
        Err(InteropError::Mismatch { problems, .. }) => {
            // Every conv and BN tensor of the network differs in shape.
            // 20 convs and 20 BatchNorms (4 float tensors each).
            assert_eq!(problems.len(), 20 + 20 * 4, "{problems:?}");
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("conv1.weight: shape [8, 3, 7, 7] in the file")),
                "{problems:?}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a width-8 file loaded into a width-16 network"),
    }
    let r34 = ResNetConfig {
        arch: Arch::Resnet34,
        width: 8,
        small_stem: false,
    };
    let e = w
        .load_backbone(r34.init::<B>(&d), &d)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing: layer3.5.conv1.weight"), "{e}");
    // A file that is not safetensors, and one that is not a ResNet.
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let e = Weights::read(&junk).err().unwrap().to_string();
    assert!(
        e.contains("junk.safetensors") && e.contains("not a safetensors"),
        "{e}"
    );
    let io = Weights::read(&fixture("r18_w8.io.safetensors")).unwrap();
    let e = io.backbone_config().unwrap_err().to_string();
    assert!(e.contains("no conv1.weight"), "{e}");
}
