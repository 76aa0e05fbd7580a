//! The two Barlow Twins views, as the reference lists them (`docs/method.md`):
//! RandomResizedCrop (bicubic, crop fused into the resize) -> horizontal
//! flip -> ColorJitter (random order, p 0.8) -> grayscale (p 0.2) ->
//! Gaussian blur (p 1.0 / 0.1) -> solarize (p 0 / 0.2) -> output (u8, or f32
//! normalised).
//!
//! Guarantees: a view's parameters ([`ViewParams`]) are drawn from the stream
//! `(seed, epoch, record, view)` alone ([`sample_view`]), so a sample looks
//! the same whatever thread renders it. [`Augmenter`] owns every buffer it
//! touches and reuses them: once they have grown to the output size, our
//! code allocates nothing per view (fast_image_resize still builds its small
//! filter-coefficient tables, a few KiB, on every resize).
//!
//! Where each pixel is touched: `crop` (resize), `color` (flip fused with the
//! u8 -> f32 step, jitter, grayscale, solarize), `blur`, `output`.

pub mod blur;
pub mod color;
pub mod crop;
pub mod output;

use std::time::{Duration, Instant};

use fast_image_resize::Resizer;
use rand_core::Rng;
use serde::{Deserialize, Serialize};

use crate::data::decode::{Decoded, PIXEL_BYTES};
use crate::rng::{self, chance, stream, uniform};
pub use crop::{CropRect, Filter};

/// Per-view probabilities and ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewConfig {
    pub flip_p: f64,
    pub jitter_p: f64,
    /// ColorJitter strengths: factors drawn from U(max(0, 1 - s), 1 + s) for
    /// brightness, contrast and saturation, and the hue shift from U(-h, h).
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    pub grayscale_p: f64,
    pub blur_p: f64,
    pub blur_sigma: (f64, f64),
    pub solarize_p: f64,
}

impl ViewConfig {
    /// The reference's view 1 (blur always, never solarize).
    pub fn reference_view1() -> ViewConfig {
        ViewConfig {
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 1.0,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
        }
    }

    /// The reference's view 2 (blur p 0.1, solarize p 0.2).
    pub fn reference_view2() -> ViewConfig {
        ViewConfig {
            blur_p: 0.1,
            solarize_p: 0.2,
            ..ViewConfig::reference_view1()
        }
    }
}

/// Everything that shapes the views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Output side in pixels (224 in the reference).
    pub size: u32,
    /// RandomResizedCrop area fraction range.
    pub scale: (f64, f64),
    /// RandomResizedCrop aspect ratio range.
    pub ratio: (f64, f64),
    pub views: [ViewConfig; 2],
    /// Evaluation transform: the centre crop's side as a fraction of the
    /// shorter side (torchvision's Resize(256) + CenterCrop(224): 0.875).
    #[serde(default = "default_eval_crop")]
    pub eval_crop: f64,
}

fn default_eval_crop() -> f64 {
    224.0 / 256.0
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            size: 224,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            views: [ViewConfig::reference_view1(), ViewConfig::reference_view2()],
            eval_crop: default_eval_crop(),
        }
    }
}

/// One ColorJitter op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JitterOp {
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    Hue(f32),
}

/// Every random choice for one view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewParams {
    pub crop: CropRect,
    /// How the crop is resized to the view.
    pub filter: Filter,
    pub flip: bool,
    /// The four jitter ops in their random order, when jitter applies.
    pub jitter: Option<[JitterOp; 4]>,
    pub grayscale: bool,
    pub blur_sigma: Option<f32>,
    pub solarize: bool,
}

/// Stream tag for view parameters.
const TAG_VIEW: u64 = 0x7669_6577;

/// Draws view `view` (0 or 1) of record `record` in `epoch` for a source
/// of `width` x `height` pixels.
pub fn sample_view(
    cfg: &AugmentConfig,
    seed: u64,
    epoch: u64,
    record: u64,
    view: usize,
    width: u32,
    height: u32,
) -> ViewParams {
    let mut rng = stream(&[TAG_VIEW, seed, epoch, record, view as u64]);
    draw_view(&mut rng, cfg, &cfg.views[view.min(1)], width, height)
}

/// The evaluation transform of a `width` x `height` source (Resize +
/// CenterCrop, bilinear as torchvision's `Resize`, nothing random): what
/// kNN, linear probes and embeddings see.
pub fn eval_view(cfg: &AugmentConfig, width: u32, height: u32) -> ViewParams {
    ViewParams {
        crop: crop::centre_crop(width, height, cfg.eval_crop),
        filter: Filter::Bilinear,
        flip: false,
        jitter: None,
        grayscale: false,
        blur_sigma: None,
        solarize: false,
    }
}

fn draw_view(
    rng: &mut impl Rng,
    cfg: &AugmentConfig,
    v: &ViewConfig,
    width: u32,
    height: u32,
) -> ViewParams {
    let crop = crop::random_resized_crop(rng, width, height, cfg.scale, cfg.ratio);
    let flip = chance(rng, v.flip_p);
    let jitter = chance(rng, v.jitter_p).then(|| {
        let factor = |rng: &mut _, s: f64| uniform(rng, (1.0 - s).max(0.0), 1.0 + s) as f32;
        let mut ops = [
            JitterOp::Brightness(factor(rng, v.brightness)),
            JitterOp::Contrast(factor(rng, v.contrast)),
            JitterOp::Saturation(factor(rng, v.saturation)),
            JitterOp::Hue(uniform(rng, -v.hue, v.hue) as f32),
        ];
        rng::shuffle(rng, &mut ops);
        ops
    });
    let grayscale = chance(rng, v.grayscale_p);
    let blur_sigma =
        chance(rng, v.blur_p).then(|| uniform(rng, v.blur_sigma.0, v.blur_sigma.1) as f32);
    let solarize = chance(rng, v.solarize_p);
    ViewParams {
        crop,
        filter: Filter::Bicubic,
        flip,
        jitter,
        grayscale,
        blur_sigma,
        solarize,
    }
}

/// Time spent per stage, summed over the views rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub crop_resize: Duration,
    pub colour: Duration,
    pub blur: Duration,
    pub write: Duration,
}

impl StageTimes {
    pub fn add(&mut self, o: &StageTimes) {
        self.crop_resize += o.crop_resize;
        self.colour += o.colour;
        self.blur += o.blur;
        self.write += o.write;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resize failed: {0}")]
pub struct AugmentError(pub String);

/// A worker's view renderer and the buffers it reuses.
pub struct Augmenter {
    size: u32,
    resizer: Resizer,
    resized: Vec<u8>,
    planes: Vec<f32>,
    blur: blur::BlurScratch,
    pub times: StageTimes,
}

impl Augmenter {
    pub fn new(size: u32) -> Augmenter {
        let n = (size * size) as usize;
        Augmenter {
            size,
            resizer: Resizer::new(),
            resized: vec![0; PIXEL_BYTES * n],
            planes: vec![0.0; 3 * n],
            blur: blur::BlurScratch::default(),
            times: StageTimes::default(),
        }
    }

    /// Renders one view of `src` into the augmenter's planes (read them with
    /// [`Augmenter::planes`] or write them out with `write_*`).
    pub fn render(&mut self, src: &Decoded<'_>, p: &ViewParams) -> Result<(), AugmentError> {
        let s = self.size as usize;
        let t0 = Instant::now();
        crop::resize_crop(
            &mut self.resizer,
            src.pixels,
            src.width,
            src.height,
            p.crop,
            self.size,
            p.filter,
            &mut self.resized,
        )
        .map_err(AugmentError)?;
        let t1 = Instant::now();
        let jitter: &[JitterOp] = p.jitter.as_ref().map_or(&[], |ops| ops);
        color::convert_and_colour(
            &self.resized,
            s,
            s,
            p.flip,
            jitter,
            p.grayscale,
            &mut self.planes,
        );
        let t2 = Instant::now();
        if let Some(sigma) = p.blur_sigma {
            if p.grayscale {
                // Grayscale is the last colour op: the planes are equal.
                blur::blur_equal_planes(&mut self.planes, s, s, sigma, &mut self.blur);
            } else {
                blur::blur(&mut self.planes, s, s, sigma, &mut self.blur);
            }
        }
        let t3 = Instant::now();
        if p.solarize {
            color::solarize(&mut self.planes);
        }
        let t4 = Instant::now();
        self.times.crop_resize += t1 - t0;
        self.times.colour += (t2 - t1) + (t4 - t3);
        self.times.blur += t3 - t2;
        Ok(())
    }

    /// The last rendered view: three planes of `size * size` values in [0, 255].
    pub fn planes(&self) -> &[f32] {
        &self.planes
    }

    /// Writes the last rendered view as u8 CHW.
    pub fn write_u8(&mut self, out: &mut [u8]) {
        let t = Instant::now();
        output::write_u8(&self.planes, out);
        self.times.write += t.elapsed();
    }

    /// Writes the last rendered view as normalised f32 CHW.
    pub fn write_f32(&mut self, out: &mut [f32]) {
        let t = Instant::now();
        output::write_f32(&self.planes, out);
        self.times.write += t.elapsed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frequencies of each op over many draws, against the reference's probabilities.
    #[test]
    fn op_probabilities_and_factor_ranges_follow_the_reference() {
        let cfg = AugmentConfig::default();
        let n = 20_000u64;
        for view in 0..2 {
            let v = &cfg.views[view];
            let (mut flip, mut jit, mut gray, mut blur, mut sol) = (0, 0, 0, 0, 0);
            let mut first_op = [0usize; 4];
            for r in 0..n {
                let p = sample_view(&cfg, 7, 0, r, view, 400, 300);
                flip += p.flip as u64;
                gray += p.grayscale as u64;
                sol += p.solarize as u64;
                if let Some(s) = p.blur_sigma {
                    blur += 1;
                    assert!((0.1..2.0).contains(&s), "sigma {s}");
                }
                if let Some(ops) = p.jitter {
                    jit += 1;
                    let mut seen = [false; 4];
                    for op in ops {
                        match op {
                            JitterOp::Brightness(f) => {
                                assert!((0.6..1.4).contains(&f));
                                seen[0] = true
                            }
                            JitterOp::Contrast(f) => {
                                assert!((0.6..1.4).contains(&f));
                                seen[1] = true
                            }
                            JitterOp::Saturation(f) => {
                                assert!((0.8..1.2).contains(&f));
                                seen[2] = true
                            }
                            JitterOp::Hue(h) => {
                                assert!((-0.1..0.1).contains(&h));
                                seen[3] = true
                            }
                        }
                    }
                    assert!(seen.iter().all(|s| *s), "every op once");
                    let k = match ops[0] {
                        JitterOp::Brightness(_) => 0,
                        JitterOp::Contrast(_) => 1,
                        JitterOp::Saturation(_) => 2,
                        JitterOp::Hue(_) => 3,
                    };
                    first_op[k] += 1;
                }
            }
            // 20,000 draws: 4 standard deviations of a proportion is < 0.015.
            let close = |count: u64, p: f64, what: &str| {
                let f = count as f64 / n as f64;
                assert!((f - p).abs() < 0.015, "view {view} {what}: {f} vs {p}");
            };
            close(flip, v.flip_p, "flip");
            close(jit, v.jitter_p, "jitter");
            close(gray, v.grayscale_p, "grayscale");
            close(blur, v.blur_p, "blur");
            close(sol, v.solarize_p, "solarize");
            // The order is a uniform permutation: each op comes first ~1/4.
            for c in first_op {
                let f = c as f64 / jit as f64;
                assert!((f - 0.25).abs() < 0.02, "first-op share {f}");
            }
        }
    }

    #[test]
    fn params_depend_on_seed_epoch_record_and_view_only() {
        let cfg = AugmentConfig::default();
        let a = sample_view(&cfg, 1, 2, 3, 0, 500, 400);
        assert_eq!(a, sample_view(&cfg, 1, 2, 3, 0, 500, 400));
        for other in [
            sample_view(&cfg, 9, 2, 3, 0, 500, 400),
            sample_view(&cfg, 1, 9, 3, 0, 500, 400),
            sample_view(&cfg, 1, 2, 9, 0, 500, 400),
            sample_view(&cfg, 1, 2, 3, 1, 500, 400),
        ] {
            assert_ne!(a.crop, other.crop);
        }
    }

    #[test]
    fn rendering_a_flat_image_without_colour_ops_keeps_its_colour() {
        let (w, h) = (50u32, 40u32);
        let pixels: Vec<u8> = [90u8, 160, 30, 255].repeat((w * h) as usize);
        let src = Decoded {
            width: w,
            height: h,
            pixels: &pixels,
        };
        let mut aug = Augmenter::new(16);
        let p = ViewParams {
            crop: CropRect {
                x: 5,
                y: 5,
                width: 30,
                height: 30,
            },
            filter: Filter::Bicubic,
            flip: true,
            jitter: None,
            grayscale: false,
            blur_sigma: Some(1.0),
            solarize: false,
        };
        aug.render(&src, &p).unwrap();
        let mut out = vec![0u8; 3 * 16 * 16];
        aug.write_u8(&mut out);
        assert!(out[..256].iter().all(|&v| v == 90));
        assert!(out[256..512].iter().all(|&v| v == 160));
        assert!(out[512..].iter().all(|&v| v == 30));
        let solarized = ViewParams {
            solarize: true,
            ..p
        };
        aug.render(&src, &solarized).unwrap();
        aug.write_u8(&mut out);
        assert!(
            out[256..512].iter().all(|&v| v == 95),
            "160 solarizes to 95"
        );
        assert!(aug.times.crop_resize > Duration::ZERO);
    }
}
