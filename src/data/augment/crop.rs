//! RandomResizedCrop: torchvision's choice of region, and the crop fused into
//! a bicubic resize (fast_image_resize, SIMD), so no cropped copy is made.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rand_core::Rng;

use crate::rng::{below, uniform};

/// A region of the source image, in whole pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 tries of an area
/// fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`;
/// then a centre crop with the aspect clamped into `ratio`.
pub fn random_resized_crop(
    rng: &mut impl Rng,
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> CropRect {
    let (w_f, h_f) = (width as f64, height as f64);
    let area = w_f * h_f;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if w > 0.0 && h > 0.0 && w <= w_f && h <= h_f {
            let (w, h) = (w as u32, h as u32);
            let y = below(rng, (height - h + 1) as u64) as u32;
            let x = below(rng, (width - w + 1) as u64) as u32;
            return CropRect {
                x,
                y,
                width: w,
                height: h,
            };
        }
    }
    let in_ratio = w_f / h_f;
    let (w, h) = if in_ratio < ratio.0.min(ratio.1) {
        (
            width,
            ((w_f / ratio.0.min(ratio.1)).round() as u32).clamp(1, height),
        )
    } else if in_ratio > ratio.0.max(ratio.1) {
        (
            ((h_f * ratio.0.max(ratio.1)).round() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    CropRect {
        x: (width - w) / 2,
        y: (height - h) / 2,
        width: w,
        height: h,
    }
}

/// torchvision's evaluation crop, `Resize(round(size / fraction))` then
/// `CenterCrop(size)`, expressed in source pixels: the centred square whose
/// side is `fraction` of the shorter side (fraction 224/256 in the reference's eval).
pub fn centre_crop(width: u32, height: u32, fraction: f64) -> CropRect {
    let short = width.min(height) as f64;
    let side = ((short * fraction).round() as u32).clamp(1, width.min(height));
    CropRect {
        x: (width - side) / 2,
        y: (height - side) / 2,
        width: side,
        height: side,
    }
}

/// The resampling filter of a resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Catmull-Rom, as PIL's BICUBIC: the reference's RandomResizedCrop.
    Bicubic,
    /// Triangle, as PIL's BILINEAR: torchvision's `Resize` default, which
    /// the reference's evaluation transform uses.
    Bilinear,
}

/// Resizes `rect` of the RGBx image `src` (`width` x `height`, 4 bytes per
/// pixel as [`crate::data::decode::Decoded`]) into `dst` (`size` x `size` x 4,
/// RGBx) with `filter`, antialiased when shrinking (as PIL resizes). The
/// fourth byte is carried along as an independent channel (no alpha
/// premultiplication).
#[allow(clippy::too_many_arguments)]
pub fn resize_crop(
    resizer: &mut Resizer,
    src: &[u8],
    width: u32,
    height: u32,
    rect: CropRect,
    size: u32,
    filter: Filter,
    dst: &mut [u8],
) -> Result<(), String> {
    let src = ImageRef::new(width, height, src, PixelType::U8x4).map_err(|e| e.to_string())?;
    let mut dst =
        Image::from_slice_u8(size, size, dst, PixelType::U8x4).map_err(|e| e.to_string())?;
    let opts = ResizeOptions::new()
        .crop(
            rect.x as f64,
            rect.y as f64,
            rect.width as f64,
            rect.height as f64,
        )
        .resize_alg(ResizeAlg::Convolution(match filter {
            Filter::Bicubic => FilterType::CatmullRom,
            Filter::Bilinear => FilterType::Bilinear,
        }))
        .use_alpha(false);
    resizer
        .resize(&src, &mut dst, &opts)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn crops_always_fit_and_follow_the_reference_distributions() {
        let mut rng = stream(&[1]);
        let n = 40_000;
        let (scale, ratio) = ((0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0));
        for (w, h) in [(500u32, 375u32), (333, 500)] {
            for _ in 0..n / 4 {
                let r = random_resized_crop(&mut rng, w, h, scale, ratio);
                assert!(r.x + r.width <= w && r.y + r.height <= h && r.width > 0 && r.height > 0);
                let area = (r.width * r.height) as f64 / (w * h) as f64;
                assert!((0.075..=1.0).contains(&area), "area {area}");
            }
        }
        // On a square image every draw with area fraction <= 0.75 fits at the
        // first try, whatever its ratio, so conditioned on that, the area is
        // U(0.08, 0.75) and the log-ratio U(ln 3/4, ln 4/3) exactly as drawn.
        let (mut areas, mut logs) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let r = random_resized_crop(&mut rng, 1000, 1000, scale, ratio);
            let area = (r.width * r.height) as f64 / 1e6;
            if area <= 0.74 {
                areas.push(area);
                logs.push((r.width as f64 / r.height as f64).ln());
            }
        }
        let m = areas.len() as f64;
        assert!(m > 0.6 * n as f64);
        let mean = areas.iter().sum::<f64>() / m;
        assert!((mean - 0.41).abs() < 0.006, "mean area {mean}");
        let below_mid = areas.iter().filter(|a| **a < 0.41).count() as f64 / m;
        assert!((below_mid - 0.5).abs() < 0.015, "{below_mid}");
        let hi = (4.0f64 / 3.0).ln();
        assert!(logs.iter().all(|l| l.abs() <= hi + 0.01));
        for k in 0..3 {
            let (lo, up) = (
                -hi + 2.0 * hi * k as f64 / 3.0,
                -hi + 2.0 * hi * (k + 1) as f64 / 3.0,
            );
            let share = logs.iter().filter(|l| (lo..up).contains(*l)).count() as f64 / m;
            assert!(
                (share - 1.0 / 3.0).abs() < 0.015,
                "log-ratio third {k}: {share}"
            );
        }
    }

    #[test]
    fn fallback_is_a_centre_crop_clamped_to_the_ratio() {
        let mut rng = stream(&[2]);
        // A 1000x10 strip: no random crop of ratio <= 4/3 with area >= 8% fits.
        let r = random_resized_crop(&mut rng, 1000, 10, (0.9, 1.0), (3.0 / 4.0, 4.0 / 3.0));
        assert_eq!((r.width, r.height), (13, 10));
        assert_eq!(r.x, (1000 - 13) / 2);
    }

    #[test]
    fn centre_crop_is_the_centred_square_of_the_short_side_fraction() {
        let r = centre_crop(500, 375, 224.0 / 256.0);
        assert_eq!((r.width, r.height), (328, 328));
        assert_eq!((r.x, r.y), ((500 - 328) / 2, (375 - 328) / 2));
        let r = centre_crop(10, 40, 1.0);
        assert_eq!((r.x, r.y, r.width, r.height), (0, 15, 10, 10));
    }

    #[test]
    fn resize_crop_of_a_flat_image_is_flat_and_picks_the_region() {
        // Left half red, right half blue.
        let (w, h) = (40u32, 20u32);
        let mut src = vec![0u8; (w * h * 4) as usize];
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                src[i..i + 4].copy_from_slice(if x < 20 {
                    &[200, 0, 0, 255]
                } else {
                    &[0, 0, 200, 255]
                });
            }
        }
        let mut dst = vec![0u8; 8 * 8 * 4];
        let mut resizer = Resizer::new();
        // Far enough from the red half that the bicubic support stays in blue.
        let rect = CropRect {
            x: 27,
            y: 4,
            width: 12,
            height: 12,
        };
        resize_crop(&mut resizer, &src, w, h, rect, 8, Filter::Bicubic, &mut dst).unwrap();
        assert!(dst.chunks(4).all(|p| p == [0, 0, 200, 255]), "{dst:?}");
    }
}
