//! The per-pixel colour operations of the Barlow Twins views, on planar f32
//! images with values in [0, 255]: ColorJitter's four ops (torchvision
//! semantics), grayscale (ITU-R 601-2 luma), solarize, and the u8 -> f32
//! conversion with the horizontal flip fused in.
//!
//! Each op has a vectorised kernel (plain loops over planes, compiled for
//! AVX2+FMA / SSE4.1 / NEON and chosen at run time by `multiversion`) and a
//! scalar reference in [`reference`], written pixel by pixel on interleaved
//! RGB the obvious way; tests hold the two to the same results. Every op
//! clamps its result to [0, 255], as the reference does after each op.

use multiversion::multiversion;

/// ITU-R 601-2 luma weights, as PIL's `convert("L")`.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

#[inline(always)]
fn clamp255(x: f32) -> f32 {
    x.max(0.0).min(255.0)
}

/// Splits three equal planes out of one `3 * n` buffer.
pub fn planes_mut(p: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let n = p.len() / 3;
    let (r, rest) = p.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    (r, g, b)
}

/// Interleaved u8 RGB (`width` x `height`) -> planar f32, mirrored
/// left-right when `flip`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn to_planes(src: &[u8], width: usize, height: usize, flip: bool, dst: &mut [f32]) {
    let n = width * height;
    let (r, g, b) = planes_mut(&mut dst[..3 * n]);
    for y in 0..height {
        let row = &src[y * width * 3..(y + 1) * width * 3];
        let (r, g, b) = (
            &mut r[y * width..(y + 1) * width],
            &mut g[y * width..(y + 1) * width],
            &mut b[y * width..(y + 1) * width],
        );
        if flip {
            for (x, px) in row.chunks_exact(3).enumerate() {
                let o = width - 1 - x;
                r[o] = px[0] as f32;
                g[o] = px[1] as f32;
                b[o] = px[2] as f32;
            }
        } else {
            for (x, px) in row.chunks_exact(3).enumerate() {
                r[x] = px[0] as f32;
                g[x] = px[1] as f32;
                b[x] = px[2] as f32;
            }
        }
    }
}

/// Brightness: multiply by `factor`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn brightness(p: &mut [f32], factor: f32) {
    for x in p.iter_mut() {
        *x = clamp255(*x * factor);
    }
}

/// Mean of the luma image.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn mean_luma(p: &[f32]) -> f32 {
    let n = p.len() / 3;
    let (r, rest) = p.split_at(n);
    let (g, b) = rest.split_at(n);
    // Eight partial sums: vectorises, and keeps f32 rounding small.
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for k in 0..8 {
            let i = c * 8 + k;
            acc[k] += LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        }
    }
    let mut sum: f64 = acc.iter().map(|&a| a as f64).sum();
    for i in chunks * 8..n {
        sum += (LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i]) as f64;
    }
    (sum / n.max(1) as f64) as f32
}

/// Contrast: blend with the mean of the luma image.
pub fn contrast(p: &mut [f32], factor: f32) {
    let mean = mean_luma(p);
    blend_const(p, factor, mean);
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn blend_const(p: &mut [f32], factor: f32, c: f32) {
    let k = (1.0 - factor) * c;
    for x in p.iter_mut() {
        *x = clamp255(factor * *x + k);
    }
}

/// Saturation: blend each pixel with its luma.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn saturation(p: &mut [f32], factor: f32) {
    let (r, g, b) = planes_mut(p);
    let k = 1.0 - factor;
    for i in 0..r.len() {
        let l = LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        r[i] = clamp255(factor * r[i] + k * l);
        g[i] = clamp255(factor * g[i] + k * l);
        b[i] = clamp255(factor * b[i] + k * l);
    }
}

/// Grayscale: every channel becomes the luma.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn grayscale(p: &mut [f32]) {
    let (r, g, b) = planes_mut(p);
    for i in 0..r.len() {
        let l = LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i];
        r[i] = l;
        g[i] = l;
        b[i] = l;
    }
}

/// Solarize: invert every value at or above 128.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn solarize(p: &mut [f32]) {
    for x in p.iter_mut() {
        *x = if *x >= 128.0 { 255.0 - *x } else { *x };
    }
}

/// Hue: rotate the hue by `shift` of a full turn (torchvision's
/// `adjust_hue` as a float HSV rotation). Branch-free so it vectorises.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn hue(p: &mut [f32], shift: f32) {
    let (r, g, b) = planes_mut(p);
    for i in 0..r.len() {
        let (rr, gg, bb) = (r[i], g[i], b[i]);
        let maxc = rr.max(gg).max(bb);
        let minc = rr.min(gg).min(bb);
        let cr = maxc - minc;
        let gray = cr == 0.0;
        let s = if gray { 0.0 } else { cr / maxc };
        let crd = if gray { 1.0 } else { cr };
        let rc = (maxc - rr) / crd;
        let gc = (maxc - gg) / crd;
        let bc = (maxc - bb) / crd;
        let is_r = maxc == rr;
        let is_g = !is_r && maxc == gg;
        let h6 = if is_r {
            bc - gc
        } else if is_g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        // Hue in [0, 1), shifted, wrapped.
        let mut h = h6 / 6.0 + shift;
        h -= h.floor();
        let v = maxc;
        let h6 = h * 6.0;
        let sector = h6.floor();
        let f = h6 - sector;
        let pp = v * (1.0 - s);
        let q = v * (1.0 - s * f);
        let t = v * (1.0 - s * (1.0 - f));
        // sector: 0..=5 (6 only through rounding: treated as 0).
        let sct = if sector >= 6.0 { 0.0 } else { sector };
        let (nr, ng, nb) = if sct < 1.0 {
            (v, t, pp)
        } else if sct < 2.0 {
            (q, v, pp)
        } else if sct < 3.0 {
            (pp, v, t)
        } else if sct < 4.0 {
            (pp, q, v)
        } else if sct < 5.0 {
            (t, pp, v)
        } else {
            (v, pp, q)
        };
        r[i] = clamp255(nr);
        g[i] = clamp255(ng);
        b[i] = clamp255(nb);
    }
}

/// Pixel-by-pixel reference implementations on interleaved RGB f32, the
/// behaviour the vectorised kernels must reproduce.
pub mod reference {
    use super::LUMA;

    fn c(x: f32) -> f32 {
        x.clamp(0.0, 255.0)
    }

    fn luma(p: &[f32; 3]) -> f32 {
        LUMA[0] * p[0] + LUMA[1] * p[1] + LUMA[2] * p[2]
    }

    pub fn to_pixels(src: &[u8], width: usize, height: usize, flip: bool) -> Vec<[f32; 3]> {
        let mut out = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let sx = if flip { width - 1 - x } else { x };
                let i = (y * width + sx) * 3;
                out.push([src[i] as f32, src[i + 1] as f32, src[i + 2] as f32]);
            }
        }
        out
    }

    pub fn brightness(px: &mut [[f32; 3]], f: f32) {
        for p in px {
            for v in p.iter_mut() {
                *v = c(*v * f);
            }
        }
    }

    pub fn contrast(px: &mut [[f32; 3]], f: f32) {
        let mean = (px.iter().map(|p| luma(p) as f64).sum::<f64>() / px.len() as f64) as f32;
        for p in px {
            for v in p.iter_mut() {
                *v = c(mean + f * (*v - mean));
            }
        }
    }

    pub fn saturation(px: &mut [[f32; 3]], f: f32) {
        for p in px {
            let l = luma(p);
            for v in p.iter_mut() {
                *v = c(l + f * (*v - l));
            }
        }
    }

    pub fn grayscale(px: &mut [[f32; 3]]) {
        for p in px {
            let l = luma(p);
            *p = [l, l, l];
        }
    }

    pub fn solarize(px: &mut [[f32; 3]]) {
        for p in px {
            for v in p.iter_mut() {
                if *v >= 128.0 {
                    *v = 255.0 - *v;
                }
            }
        }
    }

    /// Textbook RGB -> HSV -> RGB with the hue rotated.
    pub fn hue(px: &mut [[f32; 3]], shift: f32) {
        for p in px {
            let [r, g, b] = [p[0] / 255.0, p[1] / 255.0, p[2] / 255.0];
            let max = r.max(g).max(b);
            let min = r.min(g).min(b);
            let d = max - min;
            let mut h = if d == 0.0 {
                0.0
            } else if max == r {
                ((g - b) / d).rem_euclid(6.0)
            } else if max == g {
                (b - r) / d + 2.0
            } else {
                (r - g) / d + 4.0
            } / 6.0;
            let s = if max == 0.0 { 0.0 } else { d / max };
            let v = max;
            h = (h + shift).rem_euclid(1.0);
            let cc = v * s;
            let hp = h * 6.0;
            let x = cc * (1.0 - ((hp % 2.0) - 1.0).abs());
            let (r1, g1, b1) = match hp as u32 {
                0 => (cc, x, 0.0),
                1 => (x, cc, 0.0),
                2 => (0.0, cc, x),
                3 => (0.0, x, cc),
                4 => (x, 0.0, cc),
                _ => (cc, 0.0, x),
            };
            let m = v - cc;
            *p = [
                c((r1 + m) * 255.0),
                c((g1 + m) * 255.0),
                c((b1 + m) * 255.0),
            ];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, seed: u32) -> Vec<u8> {
        (0..w * h * 3)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 24) as u8)
            .collect()
    }

    fn planes_of(px: &[[f32; 3]]) -> Vec<f32> {
        let n = px.len();
        let mut out = vec![0f32; 3 * n];
        for (i, p) in px.iter().enumerate() {
            for c in 0..3 {
                out[c * n + i] = p[c];
            }
        }
        out
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= tol, "{what}: worst difference {worst}");
    }

    #[test]
    fn vectorised_kernels_match_the_scalar_reference() {
        let (w, h) = (37, 23); // odd sizes exercise the loop tails
        for seed in 0..4 {
            let src = image(w, h, seed);
            for flip in [false, true] {
                let want = reference::to_pixels(&src, w, h, flip);
                let mut got = vec![0f32; 3 * w * h];
                to_planes(&src, w, h, flip, &mut got);
                assert_eq!(got, planes_of(&want), "to_planes flip={flip}");
            }
            let base = reference::to_pixels(&src, w, h, false);
            type Op = (&'static str, fn(&mut [f32]), fn(&mut [[f32; 3]]));
            let ops: [Op; 9] = [
                (
                    "brightness 0.6",
                    |p| brightness(p, 0.6),
                    |p| reference::brightness(p, 0.6),
                ),
                (
                    "brightness 1.4",
                    |p| brightness(p, 1.4),
                    |p| reference::brightness(p, 1.4),
                ),
                (
                    "contrast 0.6",
                    |p| contrast(p, 0.6),
                    |p| reference::contrast(p, 0.6),
                ),
                (
                    "contrast 1.4",
                    |p| contrast(p, 1.4),
                    |p| reference::contrast(p, 1.4),
                ),
                (
                    "saturation 0.8",
                    |p| saturation(p, 0.8),
                    |p| reference::saturation(p, 0.8),
                ),
                (
                    "saturation 1.2",
                    |p| saturation(p, 1.2),
                    |p| reference::saturation(p, 1.2),
                ),
                ("grayscale", grayscale, reference::grayscale),
                ("solarize", solarize, reference::solarize),
                ("hue 0.1", |p| hue(p, 0.1), |p| reference::hue(p, 0.1)),
            ];
            for (name, fast, slow) in ops {
                let mut want = base.clone();
                slow(&mut want);
                let mut got = planes_of(&base);
                fast(&mut got);
                assert_close(&got, &planes_of(&want), 0.02, name);
            }
            for shift in [-0.1f32, -0.03, 0.0, 0.05, 0.1] {
                let mut want = base.clone();
                reference::hue(&mut want, shift);
                let mut got = planes_of(&base);
                hue(&mut got, shift);
                assert_close(&got, &planes_of(&want), 0.02, &format!("hue {shift}"));
            }
        }
    }

    #[test]
    fn ops_do_what_torchvision_documents() {
        let px = [[200f32, 100.0, 50.0], [10.0, 20.0, 30.0]];
        let mut p = planes_of(&px);
        brightness(&mut p, 1.4);
        assert_eq!(&p[..2], &[255.0, 14.0]); // clamped, scaled
        // Contrast 0 gives the mean luma everywhere; saturation 0 gives luma.
        let mut p = planes_of(&px);
        contrast(&mut p, 0.0);
        let l0 = 0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0;
        let l1 = 0.299 * 10.0 + 0.587 * 20.0 + 0.114 * 30.0;
        let mean = (l0 + l1) / 2.0;
        assert!(p.iter().all(|v| (v - mean).abs() < 1e-3));
        let mut p = planes_of(&px);
        saturation(&mut p, 0.0);
        assert!((p[0] - l0).abs() < 1e-3 && (p[2] - l0).abs() < 1e-3 && (p[4] - l0).abs() < 1e-3);
        // A hue shift of a full third turns red into green, and 0 changes nothing.
        let mut p = planes_of(&[[255.0, 0.0, 0.0]]);
        hue(&mut p, 1.0 / 3.0);
        assert!(
            (p[0] - 0.0).abs() < 1e-3 && (p[1] - 255.0).abs() < 1e-3,
            "{p:?}"
        );
        let mut p = planes_of(&px);
        hue(&mut p, 0.0);
        assert_close(&p, &planes_of(&px), 1e-3, "hue 0");
        let mut p = planes_of(&[[128.0, 127.0, 255.0]]);
        solarize(&mut p);
        assert_eq!(p, vec![127.0, 127.0, 0.0]);
    }
}
