//! The sample dataset: procedurally drawn patterns, one class per pattern,
//! as real JPEG files in ImageFolder layout (`train/<class>/*.jpg`, `val/...`).
//!
//! Every image has a random size and shows the pattern of its class (checks,
//! diamonds, dots, grid, horizontal stripes, rings, vertical stripes, waves)
//! at a random period, phase and slight tilt, in two colours drawn from a
//! four-colour palette shared by every class, with pixel noise. Colour says
//! nothing about the class, yet it dominates pixel distances, so the
//! nearest neighbours of an image in pixel space or in an untrained
//! network's features are mostly same-coloured images of other classes. The
//! pattern survives cropping, flipping and colour jitter: what Barlow Twins'
//! augmentations teach a network to keep, and what its features must carry
//! to classify well.
//!
//! Guarantee: the files depend only on the options (seed included); two
//! runs write identical bytes, whatever the thread count.

use std::fs;
use std::path::{Path, PathBuf};

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::decode::{CodecError, RgbImage};
use crate::error::IoError;
use crate::prep::transcode;
use crate::progress::Progress;

/// The classes, in label order (sorted by name, as ImageFolder numbers them).
pub const PATTERNS: [&str; 8] = [
    "checks", "diamonds", "dots", "grid", "hstripes", "rings", "vstripes", "waves",
];

/// The colours every class draws its two colours from.
pub const PALETTE: [[f32; 3]; 4] = [
    [220.0, 40.0, 40.0],
    [40.0, 180.0, 60.0],
    [50.0, 60.0, 220.0],
    [235.0, 220.0, 70.0],
];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleOptions {
    /// Number of classes, the first ones of [`PATTERNS`] (1 to 8).
    pub classes: usize,
    pub train_per_class: usize,
    pub val_per_class: usize,
    /// Range of image sides in pixels (each side drawn independently).
    pub min_side: u32,
    pub max_side: u32,
    pub quality: u8,
    pub seed: u64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            classes: PATTERNS.len(),
            train_per_class: 160,
            val_per_class: 40,
            min_side: 96,
            max_side: 160,
            quality: 90,
            seed: 0,
        }
    }
}

/// File written last: its presence (with the same options) means the sample
/// set is complete.
pub const SAMPLE_MARKER: &str = "sample.json";

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("invalid sample options: {0}")]
    Options(String),
    #[error("{path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: CodecError,
    },
}

/// True when `out` already holds a complete sample set made with `opts`;
/// false when it holds none, or one made with other options (an unreadable
/// or foreign marker counts as other options: the set is made again).
pub fn is_complete(out: &Path, opts: &SampleOptions) -> Result<bool, SampleError> {
    let marker = out.join(SAMPLE_MARKER);
    let bytes = match fs::read(&marker) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(IoError::at(&marker)(e).into()),
    };
    Ok(serde_json::from_slice::<SampleOptions>(&bytes).is_ok_and(|o| o == *opts))
}

/// Writes the sample set under `out` (`out/train`, `out/val`), returning the
/// number of images written.
pub fn make_sample(
    out: &Path,
    opts: &SampleOptions,
    threads: usize,
    progress: &dyn Progress,
) -> Result<usize, SampleError> {
    if opts.classes == 0 || opts.classes > PATTERNS.len() {
        return Err(SampleError::Options(format!(
            "classes must be 1 to {}, got {}",
            PATTERNS.len(),
            opts.classes
        )));
    }
    if opts.min_side < 16 || opts.min_side > opts.max_side || opts.max_side > 4096 {
        return Err(SampleError::Options(format!(
            "sides must satisfy 16 <= min_side <= max_side <= 4096, got {}..{}",
            opts.min_side, opts.max_side
        )));
    }
    let mut jobs = Vec::new();
    for (split_id, (split, per_class)) in
        [("train", opts.train_per_class), ("val", opts.val_per_class)]
            .into_iter()
            .enumerate()
    {
        for (class, shape) in PATTERNS.iter().enumerate().take(opts.classes) {
            let dir = out.join(split).join(shape);
            fs::create_dir_all(&dir).map_err(IoError::at(&dir))?;
            for i in 0..per_class {
                jobs.push((
                    dir.join(format!("{shape}_{i:05}.jpg")),
                    split_id as u64,
                    class,
                    i as u64,
                ));
            }
        }
    }
    progress.begin("make-sample", jobs.len() as u64, 0);
    crate::pool::map_ordered(
        threads,
        0..jobs.len(),
        |k| {
            let (path, split, class, i) = &jobs[k];
            let seed = opts.seed ^ (split << 60) ^ ((*class as u64) << 40) ^ i;
            let img = draw(*class, seed, opts);
            let jpeg = transcode::encode_jpeg(&img, opts.quality).map_err(|source| {
                SampleError::Encode {
                    path: path.clone(),
                    source,
                }
            })?;
            fs::write(path, jpeg).map_err(IoError::at(path))?;
            Ok::<(), SampleError>(())
        },
        |_, r: Result<(), SampleError>| {
            r?;
            progress.advance(1);
            Ok::<(), SampleError>(())
        },
    )?;
    progress.finish();
    let marker = out.join(SAMPLE_MARKER);
    let json = serde_json::to_vec_pretty(opts).map_err(|e| SampleError::Options(e.to_string()))?;
    fs::write(&marker, json).map_err(IoError::at(&marker))?;
    Ok(jobs.len())
}

/// Uniform float in [0, 1).
fn unit(rng: &mut Xoshiro256PlusPlus) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn range(rng: &mut Xoshiro256PlusPlus, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(rng)
}

/// Pattern `class` at point (u, v) of the pattern frame (one period per
/// unit), with (a, b) the offset from the image centre in periods (rings):
/// 1 for the first colour, 0 for the second.
fn pattern(class: usize, u: f32, v: f32, a: f32, b: f32) -> bool {
    let fr = |t: f32| t - t.floor();
    let odd = |t: f32| (t.floor() as i64).rem_euclid(2) == 1;
    match PATTERNS[class] {
        "checks" => odd(u) != odd(v),
        "diamonds" => odd((u + v) * 0.7) != odd((u - v) * 0.7),
        "dots" => {
            let (x, y) = (fr(u) - 0.5, fr(v) - 0.5);
            x * x + y * y < 0.09
        }
        "grid" => fr(u) < 0.2 || fr(v) < 0.2,
        "hstripes" => fr(v) < 0.5,
        "rings" => fr((a * a + b * b).sqrt()) < 0.5,
        "vstripes" => fr(u) < 0.5,
        _ => fr(v + 0.35 * (u * 1.3).sin()) < 0.5,
    }
}

/// Draws one image of class `class` from `seed`.
pub fn draw(class: usize, seed: u64, opts: &SampleOptions) -> RgbImage {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let side = |rng: &mut Xoshiro256PlusPlus| {
        opts.min_side + (rng.next_u64() % (opts.max_side - opts.min_side + 1) as u64) as u32
    };
    let (w, h) = (side(&mut rng), side(&mut rng));
    let first = (rng.next_u64() % PALETTE.len() as u64) as usize;
    let second =
        (first + 1 + (rng.next_u64() % (PALETTE.len() as u64 - 1)) as usize) % PALETTE.len();
    let (c1, c0) = (PALETTE[first], PALETTE[second]);
    let period = range(&mut rng, 0.1, 0.2) * w.min(h) as f32;
    let (ox, oy) = (range(&mut rng, 0.0, 100.0), range(&mut rng, 0.0, 100.0));
    let (sin, cos) = range(&mut rng, -0.15, 0.15).sin_cos();
    let noise = range(&mut rng, 0.0, 12.0);
    // Four samples per pixel: edges are anti-aliased as in a photo.
    const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);

    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let mut cover = 0.0;
            for (sx, sy) in SUB {
                let (fx, fy) = (x as f32 + sx, y as f32 + sy);
                let (px, py) = (fx + ox, fy + oy);
                let u = (px * cos - py * sin) / period;
                let v = (px * sin + py * cos) / period;
                let (a, b) = ((fx - cx) / period, (fy - cy) / period);
                if pattern(class, u, v, a, b) {
                    cover += 0.25;
                }
            }
            for c in 0..3 {
                let n = range(&mut rng, -noise, noise);
                pixels.push((c0[c] + (c1[c] - c0[c]) * cover + n).clamp(0.0, 255.0) as u8);
            }
        }
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_sorted_like_image_folder_labels() {
        let mut sorted = PATTERNS;
        sorted.sort();
        assert_eq!(sorted, PATTERNS);
    }

    #[test]
    fn same_seed_same_image_other_seed_other_image() {
        let o = SampleOptions::default();
        assert_eq!(draw(3, 7, &o), draw(3, 7, &o));
        assert_ne!(draw(3, 7, &o).pixels, draw(3, 8, &o).pixels);
    }

    #[test]
    fn patterns_differ_and_colours_come_from_the_palette() {
        let o = SampleOptions::default();
        // The same seed draws the same size, colours, period and phase for
        // every class: only the pattern differs.
        let imgs: Vec<RgbImage> = (0..PATTERNS.len()).map(|c| draw(c, 11, &o)).collect();
        for a in 0..imgs.len() {
            for b in a + 1..imgs.len() {
                let differing = imgs[a]
                    .pixels
                    .chunks(3)
                    .zip(imgs[b].pixels.chunks(3))
                    .filter(|(p, q)| {
                        p.iter()
                            .zip(*q)
                            .map(|(x, y)| x.abs_diff(*y) as u32)
                            .sum::<u32>()
                            > 90
                    })
                    .count();
                let share = differing as f32 / (imgs[a].pixels.len() / 3) as f32;
                assert!(share > 0.1, "{} ~ {}: {share}", PATTERNS[a], PATTERNS[b]);
            }
        }
        // Most pixels lie near one of two palette colours.
        for img in &imgs {
            let near = img
                .pixels
                .chunks(3)
                .filter(|p| {
                    PALETTE
                        .iter()
                        .any(|c| (0..3).all(|k| (p[k] as f32 - c[k]).abs() < 16.0))
                })
                .count();
            assert!(near * 10 > 6 * img.pixels.len() / 3, "{near}");
        }
    }
}
