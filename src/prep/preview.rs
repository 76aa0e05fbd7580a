//! A picture of what the augmentations do: for each of a few records, the
//! source image and its two views side by side.

use crate::data::augment::{AugmentConfig, Augmenter, sample_view};
use crate::data::decode::Decoder;
use crate::data::decode::{CodecError, RgbImage};
use crate::data::sampler::{Sampler, SamplerConfig};
use crate::data::shard::{Dataset, ShardError};
use crate::prep::transcode;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("record {record}: {source}")]
    Codec {
        record: u64,
        #[source]
        source: CodecError,
    },
    #[error("{0}")]
    Other(String),
}

/// A grid of `rows` records (the first of epoch `epoch`'s order for `seed`):
/// source (fitted into a square), view 1, view 2; 4-pixel gutters.
pub fn preview_grid(
    ds: &Dataset,
    cfg: &AugmentConfig,
    seed: u64,
    epoch: u64,
    rows: usize,
) -> Result<RgbImage, PreviewError> {
    let s = cfg.size as usize;
    let gap = 4usize;
    let rows = rows.clamp(1, ds.len() as usize);
    let sampler = Sampler::new(
        ds.len(),
        SamplerConfig {
            seed,
            batch_size: 1,
            ..SamplerConfig::default()
        },
    )
    .map_err(|e| PreviewError::Other(e.to_string()))?;
    let order = sampler.epoch_order(epoch);
    let (w, h) = (3 * s + 4 * gap, rows * s + (rows + 1) * gap);
    let mut grid = vec![255u8; w * h * 3];
    let mut decoder = Decoder::new(u64::MAX);
    let mut aug = Augmenter::new(cfg.size);
    let mut chw = vec![0u8; 3 * s * s];
    let mut bytes = Vec::new();
    for (row, &record) in order.iter().take(rows).enumerate() {
        ds.read_verified_into(record, &mut bytes)?;
        let img = decoder
            .decode(&bytes)
            .map_err(|source| PreviewError::Codec { record, source })?;
        let src = img.to_rgb();
        // Source fitted into an s x s square, centred.
        let scale = s as f64 / src.width.max(src.height) as f64;
        let (fw, fh) = (
            ((src.width as f64 * scale).round() as u32).max(1),
            ((src.height as f64 * scale).round() as u32).max(1),
        );
        let fitted = transcode::resize(&src, fw, fh)
            .map_err(|source| PreviewError::Codec { record, source })?;
        let y0 = gap + row * (s + gap);
        let (ox, oy) = (gap + (s - fw as usize) / 2, y0 + (s - fh as usize) / 2);
        for y in 0..fh as usize {
            let dst = ((oy + y) * w + ox) * 3;
            grid[dst..dst + fw as usize * 3]
                .copy_from_slice(&fitted.pixels[y * fw as usize * 3..(y + 1) * fw as usize * 3]);
        }
        for v in 0..2 {
            let p = sample_view(cfg, seed, epoch, record, v, img.width, img.height);
            aug.render(&img, &p)
                .map_err(|e| PreviewError::Other(e.to_string()))?;
            aug.write_u8(&mut chw);
            let x0 = gap + (v + 1) * (s + gap);
            for y in 0..s {
                for x in 0..s {
                    let d = ((y0 + y) * w + x0 + x) * 3;
                    for c in 0..3 {
                        grid[d + c] = chw[c * s * s + y * s + x];
                    }
                }
            }
        }
    }
    Ok(RgbImage {
        width: w as u32,
        height: h as u32,
        pixels: grid,
    })
}
