//! Crops of real photographs at ImageNet-like size, for benchmarking the
//! loader on data that decodes like ImageNet (flat synthetic images decode
//! several times faster than photos).
//!
//! Sources are large photos (for instance the desktop backgrounds Debian
//! packages ship; see `datasets/make-photo-crops.sh`). Each crop takes a
//! random region of a source, at least as large as the output so nothing is
//! upscaled, resized (Lanczos-3) so that its long side is 330 to 500 px with
//! an aspect ratio between 3:4 and 4:3, and encoded as a baseline 4:2:0 JPEG
//! of quality 85 to 95. Output is ImageFolder-shaped, one folder per source.
//! Deterministic for a given source list, options and seed.
//!
//! Desktop backgrounds include flat graphics (gradients, stripes) that
//! decode several times faster than photographs and would flatter a loader
//! benchmark. Each source is therefore tried first: three trial crops are
//! encoded at quality 90, and a source whose crops average fewer than
//! `min_bpp` bits per pixel (default 2) is skipped as "too smooth for a
//! photo". Theme folders that ship one
//! picture at several resolutions (`.../contents/images/*`) count once: the
//! largest file is used.

use std::fs;
use std::path::{Path, PathBuf};

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::decode::{CodecError, RgbImage};
use crate::error::IoError;
use crate::prep::transcode;
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct CropOptions {
    /// Total number of crops, spread evenly over the sources.
    pub count: usize,
    /// Range of the output's long side.
    pub min_long: u32,
    pub max_long: u32,
    /// Range of JPEG quality.
    pub min_quality: u8,
    pub max_quality: u8,
    pub seed: u64,
    /// Sources whose trial crops average fewer bits per pixel are skipped.
    pub min_bpp: f64,
}

impl Default for CropOptions {
    fn default() -> Self {
        CropOptions {
            count: 3000,
            min_long: 330,
            max_long: 500,
            min_quality: 85,
            max_quality: 95,
            seed: 0,
            min_bpp: 2.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CropError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "no usable source photo (JPEG, PNG or WebP with a long side of at least {0} px) was found"
    )]
    NoSources(u32),
    #[error("{path}: {source}")]
    Codec {
        path: PathBuf,
        #[source]
        source: CodecError,
    },
}

/// What a run made.
#[derive(Debug, Clone)]
pub struct CropSummary {
    pub sources_used: usize,
    pub sources_skipped: Vec<(PathBuf, String)>,
    pub crops: usize,
    pub bytes: u64,
}

fn find_sources(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, CropError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), CropError> {
        let rd = fs::read_dir(dir).map_err(IoError::at(dir))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 16 {
                walk(&p, out, depth + 1)?;
            } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["jpg", "jpeg", "png", "webp"]
                    .iter()
                    .any(|x| e.eq_ignore_ascii_case(x))
            }) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &mut out, 0)?;
    }
    out.sort();
    out.dedup();
    // One picture per theme folder holding it at several resolutions.
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in out {
        let theme = |q: &Path| {
            q.parent()
                .filter(|d| d.file_name().is_some_and(|n| n == "images"))
                .map(Path::to_path_buf)
        };
        let size = |q: &Path| fs::metadata(q).map_or(0, |m| m.len());
        match kept.last_mut() {
            Some(last) if theme(&p).is_some() && theme(last) == theme(&p) => {
                if size(&p) > size(last) {
                    *last = p;
                }
            }
            _ => kept.push(p),
        }
    }
    Ok(kept)
}

/// Average bits per pixel of three trial crops of `img` at quality 90.
fn trial_bpp(img: &RgbImage, opts: &CropOptions) -> Result<f64, CodecError> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed ^ 0x7472_6961_6c00);
    let mut bits = 0.0;
    let mut pixels = 0.0;
    for _ in 0..3 {
        let (crop, _) = cut(img, &mut rng, opts)?;
        bits += 8.0 * transcode::encode_jpeg(&crop, 90)?.len() as f64;
        pixels += (crop.width * crop.height) as f64;
    }
    Ok(bits / pixels)
}

/// Cuts `opts.count` crops out of the photos found under `sources` into `out`.
pub fn make_photo_crops(
    sources: &[PathBuf],
    out: &Path,
    opts: &CropOptions,
    threads: usize,
    progress: &dyn Progress,
) -> Result<CropSummary, CropError> {
    let files = find_sources(sources)?;
    // Decode each candidate once to keep only usable ones (a deterministic
    // list, so crops per source do not depend on timing).
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for f in &files {
        let decoded = fs::read(f)
            .map_err(|e| e.to_string())
            .and_then(|b| transcode::decode_any(&b, 1 << 28).map_err(|e| e.to_string()));
        match decoded {
            Ok(img) if img.width.max(img.height) < opts.max_long => skipped.push((
                f.clone(),
                format!("too small ({}x{})", img.width, img.height),
            )),
            Ok(img) => match trial_bpp(&img, opts) {
                Ok(bpp) if bpp >= opts.min_bpp => usable.push(f.clone()),
                Ok(bpp) => skipped.push((
                    f.clone(),
                    format!("too smooth for a photo ({bpp:.2} bits/pixel)"),
                )),
                Err(e) => skipped.push((f.clone(), e.to_string())),
            },
            Err(e) => skipped.push((f.clone(), e)),
        }
    }
    if usable.is_empty() {
        return Err(CropError::NoSources(opts.max_long));
    }
    progress.begin("make-photo-crops", opts.count as u64, 0);
    let n = usable.len();
    let mut bytes = 0u64;
    crate::pool::map_ordered(
        threads,
        0..n,
        |k| -> Result<u64, CropError> {
            let src = &usable[k];
            let share = opts.count / n + usize::from(k < opts.count % n);
            let codec_err = |source| CropError::Codec {
                path: src.clone(),
                source,
            };
            let raw = fs::read(src).map_err(IoError::at(src))?;
            let img = transcode::decode_any(&raw, 1 << 28).map_err(codec_err)?;
            let stem = src.file_stem().unwrap_or_default().to_string_lossy();
            let dir = out.join(format!("{k:03}-{stem}"));
            fs::create_dir_all(&dir).map_err(IoError::at(&dir))?;
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed ^ ((k as u64) << 32));
            let mut written = 0;
            for j in 0..share {
                let (crop, quality) = cut(&img, &mut rng, opts).map_err(codec_err)?;
                let jpeg = transcode::encode_jpeg(&crop, quality).map_err(codec_err)?;
                let path = dir.join(format!("{j:05}.jpg"));
                fs::write(&path, &jpeg).map_err(IoError::at(&path))?;
                written += jpeg.len() as u64;
            }
            Ok(written)
        },
        |k, r| {
            bytes += r?;
            progress.advance((opts.count / n + usize::from(k < opts.count % n)) as u64);
            Ok::<(), CropError>(())
        },
    )?;
    progress.finish();
    Ok(CropSummary {
        sources_used: n,
        sources_skipped: skipped,
        crops: opts.count,
        bytes,
    })
}

fn uniform(rng: &mut Xoshiro256PlusPlus, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
}

/// One random crop of `img` and the quality to encode it with.
fn cut(
    img: &RgbImage,
    rng: &mut Xoshiro256PlusPlus,
    opts: &CropOptions,
) -> Result<(RgbImage, u8), CodecError> {
    let long = uniform(rng, opts.min_long as f64, opts.max_long as f64 + 1.0).floor();
    let aspect = uniform(rng, 1.0, 4.0 / 3.0);
    let short = (long / aspect).round();
    let (ow, oh) = if rng.next_u64().is_multiple_of(4) {
        (short as u32, long as u32) // portrait, as a quarter of photos are
    } else {
        (long as u32, short as u32)
    };
    // Source region with the output's aspect ratio, between the output size
    // and the largest that fits.
    let max_scale = (img.width as f64 / ow as f64).min(img.height as f64 / oh as f64);
    let scale = uniform(rng, 1.0, max_scale.max(1.0));
    let cw = ((ow as f64 * scale) as u32).clamp(1, img.width);
    let ch = ((oh as f64 * scale) as u32).clamp(1, img.height);
    let x0 = (rng.next_u64() % (img.width - cw + 1) as u64) as u32;
    let y0 = (rng.next_u64() % (img.height - ch + 1) as u64) as u32;
    let mut region = Vec::with_capacity((cw * ch * 3) as usize);
    for y in y0..y0 + ch {
        let row = ((y * img.width + x0) * 3) as usize;
        region.extend_from_slice(&img.pixels[row..row + (cw * 3) as usize]);
    }
    let region = RgbImage {
        width: cw,
        height: ch,
        pixels: region,
    };
    let crop = transcode::resize(&region, ow.min(cw), oh.min(ch))?;
    let q =
        opts.min_quality as u64 + rng.next_u64() % (opts.max_quality - opts.min_quality + 1) as u64;
    Ok((crop, q as u8))
}
