//! The sample dataset: procedurally drawn shapes, one class per shape, as real
//! JPEG files in ImageFolder layout (`train/<class>/*.jpg`, `val/...`).
//!
//! Every image has a random size, a textured background of random colours,
//! and one object of its class at a random position, scale and rotation,
//! painted in random colours with a texture of its own. Colour says nothing
//! about the class, so telling classes apart needs a colour-invariant,
//! shape-aware representation: what Barlow Twins' augmentations teach.
//!
//! Guarantee: the files depend only on the options (seed included); two
//! runs write identical bytes, whatever the thread count.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::codec::{self, RgbImage};
use crate::progress::Progress;

/// The classes, in label order (sorted by name, as ImageFolder numbers them).
pub const SHAPES: [&str; 8] = [
    "circle", "cross", "heart", "hexagon", "ring", "square", "star", "triangle",
];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleOptions {
    /// Number of classes, the first ones of [`SHAPES`] (1 to 8).
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
            classes: SHAPES.len(),
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
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sample options: {0}")]
    Options(String),
    #[error("{path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: codec::CodecError,
    },
}

/// True when `out` already holds a complete sample set made with `opts`.
pub fn is_complete(out: &Path, opts: &SampleOptions) -> bool {
    fs::read(out.join(SAMPLE_MARKER))
        .ok()
        .and_then(|b| serde_json::from_slice::<SampleOptions>(&b).ok())
        .is_some_and(|o| o == *opts)
}

/// Writes the sample set under `out` (`out/train`, `out/val`), returning the
/// number of images written.
pub fn make_sample(
    out: &Path,
    opts: &SampleOptions,
    threads: usize,
    progress: &dyn Progress,
) -> Result<usize, SampleError> {
    if opts.classes == 0 || opts.classes > SHAPES.len() {
        return Err(SampleError::Options(format!(
            "classes must be 1 to {}, got {}",
            SHAPES.len(),
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
        for (class, shape) in SHAPES.iter().enumerate().take(opts.classes) {
            let dir = out.join(split).join(shape);
            fs::create_dir_all(&dir).map_err(|source| SampleError::Io {
                path: dir.clone(),
                source,
            })?;
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
    let next = AtomicUsize::new(0);
    let results: Vec<Result<(), SampleError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, split, class, i)) = jobs.get(k) else {
                            return Ok(());
                        };
                        let seed = opts.seed ^ (split << 60) ^ ((*class as u64) << 40) ^ i;
                        let img = draw(*class, seed, opts);
                        let jpeg = codec::encode_jpeg(&img, opts.quality).map_err(|source| {
                            SampleError::Encode {
                                path: path.clone(),
                                source,
                            }
                        })?;
                        fs::write(path, jpeg).map_err(|source| SampleError::Io {
                            path: path.clone(),
                            source,
                        })?;
                        progress.advance(1);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    progress.finish();
    results.into_iter().collect::<Result<(), _>>()?;
    let marker = out.join(SAMPLE_MARKER);
    let json = serde_json::to_vec_pretty(opts).map_err(|e| SampleError::Options(e.to_string()))?;
    fs::write(&marker, json).map_err(|source| SampleError::Io {
        path: marker,
        source,
    })?;
    Ok(jobs.len())
}

/// Uniform float in [0, 1).
fn unit(rng: &mut Xoshiro256PlusPlus) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn range(rng: &mut Xoshiro256PlusPlus, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(rng)
}

fn colour(rng: &mut Xoshiro256PlusPlus) -> [f32; 3] {
    [
        range(rng, 0.0, 255.0),
        range(rng, 0.0, 255.0),
        range(rng, 0.0, 255.0),
    ]
}

/// A texture: a value in [0, 1] at each point, from one of three families.
#[derive(Debug, Clone, Copy)]
enum Texture {
    Stripes {
        dir: (f32, f32),
        freq: f32,
        phase: f32,
    },
    Checker {
        dir: (f32, f32),
        cell: f32,
    },
    Waves {
        dirs: [(f32, f32); 3],
        freq: f32,
        phase: [f32; 3],
    },
}

impl Texture {
    fn random(rng: &mut Xoshiro256PlusPlus) -> Texture {
        let angle = |rng: &mut Xoshiro256PlusPlus| {
            let a = range(rng, 0.0, std::f32::consts::TAU);
            (a.cos(), a.sin())
        };
        match rng.next_u64() % 3 {
            0 => Texture::Stripes {
                dir: angle(rng),
                freq: range(rng, 0.08, 0.5),
                phase: range(rng, 0.0, 6.3),
            },
            1 => Texture::Checker {
                dir: angle(rng),
                cell: range(rng, 4.0, 20.0),
            },
            _ => Texture::Waves {
                dirs: [angle(rng), angle(rng), angle(rng)],
                freq: range(rng, 0.03, 0.15),
                phase: [
                    range(rng, 0.0, 6.3),
                    range(rng, 0.0, 6.3),
                    range(rng, 0.0, 6.3),
                ],
            },
        }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        match *self {
            Texture::Stripes { dir, freq, phase } => {
                0.5 + 0.5 * (freq * (x * dir.0 + y * dir.1) + phase).sin()
            }
            Texture::Checker { dir, cell } => {
                let u = ((x * dir.0 + y * dir.1) / cell).floor() as i64;
                let v = ((-x * dir.1 + y * dir.0) / cell).floor() as i64;
                ((u + v).rem_euclid(2)) as f32
            }
            Texture::Waves { dirs, freq, phase } => {
                let s: f32 = (0..3)
                    .map(|k| (freq * (x * dirs[k].0 + y * dirs[k].1) + phase[k]).sin())
                    .sum();
                (0.5 + s / 6.0).clamp(0.0, 1.0)
            }
        }
    }
}

fn polygon(n: usize, outer: f32, inner: f32) -> Vec<(f32, f32)> {
    let steps = if inner > 0.0 { 2 * n } else { n };
    (0..steps)
        .map(|k| {
            let a = -std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::TAU / steps as f32;
            let r = if inner > 0.0 && k % 2 == 1 {
                inner
            } else {
                outer
            };
            (r * a.cos(), r * a.sin())
        })
        .collect()
}

/// Even-odd rule point-in-polygon test.
fn in_polygon(poly: &[(f32, f32)], u: f32, v: f32) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Whether point (u, v) of the unit object frame (y down) lies in the shape.
fn inside(class: usize, u: f32, v: f32, polys: &[Vec<(f32, f32)>; 3]) -> bool {
    let r2 = u * u + v * v;
    match SHAPES[class] {
        "circle" => r2 < 1.0,
        "cross" => (u.abs() < 0.3 && v.abs() < 0.95) || (v.abs() < 0.3 && u.abs() < 0.95),
        "heart" => {
            let (x, y) = (u * 1.25, -v * 1.25 + 0.15);
            let a = x * x + y * y - 1.0;
            a * a * a - x * x * y * y * y < 0.0
        }
        "hexagon" => in_polygon(&polys[0], u, v),
        "ring" => (0.36..1.0).contains(&r2),
        "square" => u.abs() < 0.78 && v.abs() < 0.78,
        "star" => in_polygon(&polys[1], u, v),
        _ => in_polygon(&polys[2], u, v),
    }
}

/// Draws one image of class `class` from `seed`.
pub fn draw(class: usize, seed: u64, opts: &SampleOptions) -> RgbImage {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let side = |rng: &mut Xoshiro256PlusPlus| {
        opts.min_side + (rng.next_u64() % (opts.max_side - opts.min_side + 1) as u64) as u32
    };
    let (w, h) = (side(&mut rng), side(&mut rng));
    let (bg0, bg1) = (colour(&mut rng), colour(&mut rng));
    let bg_tex = Texture::random(&mut rng);
    let (fg0, fg1) = (colour(&mut rng), colour(&mut rng));
    let fg_tex = Texture::random(&mut rng);
    let fg_mix = range(&mut rng, 0.0, 0.35);
    let short = w.min(h) as f32;
    let radius = range(&mut rng, 0.22, 0.42) * short;
    let cx = range(&mut rng, radius, w as f32 - radius);
    let cy = range(&mut rng, radius, h as f32 - radius);
    let theta = range(&mut rng, 0.0, std::f32::consts::TAU);
    let (sin, cos) = theta.sin_cos();
    let polys = [
        polygon(6, 1.0, 0.0),
        polygon(5, 1.0, 0.45),
        polygon(3, 1.0, 0.0),
    ];
    let noise = range(&mut rng, 0.0, 12.0);
    const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];

    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32, y as f32);
            let mut cover = 0.0;
            for (ox, oy) in SUB {
                let (dx, dy) = (fx + ox - cx, fy + oy - cy);
                let u = (dx * cos + dy * sin) / radius;
                let v = (-dx * sin + dy * cos) / radius;
                if inside(class, u, v, &polys) {
                    cover += 0.25;
                }
            }
            let tb = bg_tex.at(fx, fy);
            let tf = fg_mix * fg_tex.at(fx, fy);
            for c in 0..3 {
                let bg = bg0[c] + (bg1[c] - bg0[c]) * tb;
                let fg = fg0[c] + (fg1[c] - fg0[c]) * tf;
                let n = range(&mut rng, -noise, noise);
                pixels.push((bg + (fg - bg) * cover + n).clamp(0.0, 255.0) as u8);
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
        let mut sorted = SHAPES;
        sorted.sort();
        assert_eq!(sorted, SHAPES);
    }

    #[test]
    fn same_seed_same_image_other_seed_other_image() {
        let o = SampleOptions::default();
        assert_eq!(draw(3, 7, &o), draw(3, 7, &o));
        assert_ne!(draw(3, 7, &o).pixels, draw(3, 8, &o).pixels);
    }

    #[test]
    fn every_shape_covers_a_plausible_share_of_its_frame() {
        let polys = [
            polygon(6, 1.0, 0.0),
            polygon(5, 1.0, 0.45),
            polygon(3, 1.0, 0.0),
        ];
        let mut areas = Vec::new();
        for (class, name) in SHAPES.iter().enumerate() {
            let n = 200;
            let mut hits = 0;
            for i in 0..n {
                for j in 0..n {
                    let u = -1.0 + 2.0 * (i as f32 + 0.5) / n as f32;
                    let v = -1.0 + 2.0 * (j as f32 + 0.5) / n as f32;
                    hits += inside(class, u, v, &polys) as usize;
                }
            }
            let share = hits as f32 / (n * n) as f32;
            assert!((0.1..0.9).contains(&share), "{name}: {share}");
            areas.push(share);
        }
        // No two shapes are the same set of points.
        for a in 0..areas.len() {
            for b in a + 1..areas.len() {
                assert!(
                    (areas[a] - areas[b]).abs() > 1e-3,
                    "{} ~ {}",
                    SHAPES[a],
                    SHAPES[b]
                );
            }
        }
    }
}
