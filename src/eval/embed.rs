//! Embeddings: the backbone's pooled features (not normalised) of one image
//! ([`embed_image`]) or of every record of a dataset ([`super::features`]),
//! written as NumPy `.npy` or safetensors ([`save`]).
//!
//! Both see the eval transform the loader applies: the centre crop of side
//! 0.875 x the shorter side (torchvision's Resize(256) + CenterCrop(224) at
//! 224 px), resized to the view size, normalised with the ImageNet mean and
//! standard deviation. An image gives the same vector either way.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{EvalError, Features};
use crate::data::augment::{AugmentConfig, Augmenter, eval_view};
use crate::data::decode::{DEFAULT_MAX_PIXELS, Decoded, Decoder, PIXEL_BYTES, is_jpeg};
use crate::data::shard::NO_LABEL;
use crate::error::IoError;
use crate::model::{ResNet, normalise_u8};
use crate::prep::transcode;

/// The features of the image file at `path` (JPEG, or any format
/// shardify accepts) under the eval transform at `size` pixels.
pub fn embed_image<B: Backend>(
    backbone: &ResNet<B>,
    path: &Path,
    size: u32,
    device: &B::Device,
) -> Result<Vec<f32>, EvalError> {
    let bytes = std::fs::read(path).map_err(IoError::at(path))?;
    let image_err = |message: String| EvalError::Image {
        path: path.to_path_buf(),
        message,
    };
    let mut decoder = Decoder::new(DEFAULT_MAX_PIXELS);
    let rgbx: Vec<u8>;
    let img = if is_jpeg(&bytes) {
        decoder
            .decode(&bytes)
            .map_err(|e| image_err(e.to_string()))?
    } else {
        let rgb = transcode::decode_any(&bytes, DEFAULT_MAX_PIXELS)
            .map_err(|e| image_err(e.to_string()))?;
        rgbx = rgb
            .pixels
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        Decoded {
            width: rgb.width,
            height: rgb.height,
            pixels: &rgbx,
        }
    };
    debug_assert_eq!(
        img.pixels.len(),
        img.width as usize * img.height as usize * PIXEL_BYTES
    );
    let cfg = AugmentConfig {
        size,
        ..AugmentConfig::default()
    };
    let mut aug = Augmenter::new(size);
    aug.render(&img, &eval_view(&cfg, img.width, img.height))
        .map_err(|e| image_err(e.to_string()))?;
    let s = size as usize;
    let mut chw = vec![0u8; 3 * s * s];
    aug.write_u8(&mut chw);
    let x = normalise_u8::<B>(&chw, [1, 3, s, s], device);
    let f = backbone.forward(x).into_data().convert::<f32>();
    Ok(f.iter::<f32>().collect())
}

/// The file formats [`save`] writes, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `FILE.npy` (features, `[N, D]` float32) and `FILE.labels.npy`
    /// (`[N]` int64).
    Npy,
    /// One file with tensors `features` (`[N, D]` F32) and `labels`
    /// (`[N]` I64).
    Safetensors,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "npy" => Some(Format::Npy),
            "safetensors" => Some(Format::Safetensors),
            _ => None,
        }
    }
}

/// Writes `f` to `path` in the format its extension names; labels are
/// int64, -1 for an unlabelled record. Returns the files written.
pub fn save(path: &Path, f: &Features) -> Result<Vec<PathBuf>, EvalError> {
    let values: Vec<u8> = f.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let labels: Vec<u8> = f
        .labels
        .iter()
        .map(|&l| if l == NO_LABEL { -1 } else { i64::from(l) })
        .flat_map(i64::to_le_bytes)
        .collect();
    let (n, d) = (f.len(), f.dim);
    match Format::of(path) {
        Some(Format::Npy) => {
            let labels_path = path.with_extension("labels.npy");
            crate::fs::write_atomically(path, &npy("<f4", &[n, d], &values))?;
            crate::fs::write_atomically(&labels_path, &npy("<i8", &[n], &labels))?;
            Ok(vec![path.to_path_buf(), labels_path])
        }
        Some(Format::Safetensors) => {
            let view = |dtype, shape: Vec<usize>, bytes| {
                TensorView::new(dtype, shape, bytes).map_err(|e| EvalError::Image {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            };
            let tensors = [
                ("features", view(Dtype::F32, vec![n, d], &values)?),
                ("labels", view(Dtype::I64, vec![n], &labels)?),
            ];
            let bytes =
                safetensors::tensor::serialize(tensors, None).map_err(|e| EvalError::Image {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            crate::fs::write_atomically(path, &bytes)?;
            Ok(vec![path.to_path_buf()])
        }
        None => Err(EvalError::Image {
            path: path.to_path_buf(),
            message: "unknown output format: name the file .npy or .safetensors".into(),
        }),
    }
}

/// A NumPy `.npy` file (format 1.0, C order) of `data` with dtype `descr`.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + header length (2) + header + newline: a
    // multiple of 64 bytes, as NumPy writes it.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files NumPy 2 wrote: `np.save(p, np.array([[1.5, -2, 3], [0, 0.25, 7]],
    /// dtype='<f4'))` and `np.save(p, np.array([3, -1], dtype='<i8'))`.
    const NUMPY_F32: &[u8] = include_bytes!("../../tests/fixtures/numpy_f32_2x3.npy");
    const NUMPY_I64: &[u8] = include_bytes!("../../tests/fixtures/numpy_i64_2.npy");

    #[test]
    fn npy_files_are_byte_for_byte_what_numpy_writes() {
        let v: Vec<u8> = [1.5f32, -2.0, 3.0, 0.0, 0.25, 7.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(npy("<f4", &[2, 3], &v), NUMPY_F32);
        let l: Vec<u8> = [3i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(npy("<i8", &[2], &l), NUMPY_I64);
    }

    #[test]
    fn embeddings_save_in_both_formats_with_unlabelled_as_minus_one() {
        let tmp = tempfile::tempdir().unwrap();
        let f = Features {
            dim: 2,
            values: vec![1.0, 2.0, 3.0, 4.0],
            labels: vec![7, NO_LABEL],
        };
        let written = save(&tmp.path().join("e.npy"), &f).unwrap();
        assert_eq!(written[1], tmp.path().join("e.labels.npy"));
        let labels = std::fs::read(&written[1]).unwrap();
        assert_eq!(
            &labels[labels.len() - 16..],
            &[7i64.to_le_bytes(), (-1i64).to_le_bytes()].concat()
        );
        let p = tmp.path().join("e.safetensors");
        save(&p, &f).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("features").unwrap().shape(), &[2, 2]);
        assert_eq!(
            st.tensor("labels").unwrap().data(),
            &labels[labels.len() - 16..]
        );
        assert!(save(&tmp.path().join("e.csv"), &f).is_err());
    }
}
