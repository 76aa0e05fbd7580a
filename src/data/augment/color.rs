//! The per-pixel colour operations of the Barlow Twins views, on planar f32
//! images with values in [0, 255]: ColorJitter's four ops (torchvision
//! semantics), grayscale (ITU-R 601-2 luma), solarize, and the u8 -> f32
//! conversion with the horizontal flip fused in.
//!
//! Each op has a vectorised kernel (plain loops over planes, compiled for
//! AVX2+FMA / SSE4.1 / NEON and chosen at run time by `multiversion`) and a
//! scalar reference in [`reference`], written pixel by pixel on interleaved
//! RGB the obvious way; tests hold the two to the same results. Every op
//! clamps its result to [0, 255], as the reference does after each op
//! (where an op cannot leave the range, a factor <= 1 blending values in
//! it, the clamp is skipped: the result is in range to within f32 rounding).

use multiversion::multiversion;

use super::JitterOp;

/// ITU-R 601-2 luma weights, as PIL's `convert("L")`.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

#[inline(always)]
fn clamp255(x: f32) -> f32 {
    x.clamp(0.0, 255.0)
}

/// Splits three equal planes out of one `3 * n` buffer.
pub fn planes_mut(p: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let n = p.len() / 3;
    let (r, rest) = p.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    (r, g, b)
}

/// Interleaved u8 RGBx (`width` x `height`, 4 bytes per pixel as
/// [`crate::data::decode::Decoded`]) -> planar f32, mirrored left-right when
/// `flip`.
pub fn to_planes(src: &[u8], width: usize, height: usize, flip: bool, dst: &mut [f32]) {
    convert_and_colour(src, width, height, flip, &[], false, dst);
}

/// One row of RGBx pixels -> three f32 planes (as many pixels as `r`
/// holds), mirrored when `flip`. Each pixel is read as one little-endian
/// u32 and its bytes masked out, which vectorises without shuffles.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn deinterleave(src: &[u8], flip: bool, r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
    let (pixels, _) = src.as_chunks::<4>();
    let n = r.len().min(g.len()).min(b.len()).min(pixels.len());
    let split = |p: &[u8; 4]| {
        let v = u32::from_le_bytes(*p);
        (
            (v & 0xff) as f32,
            ((v >> 8) & 0xff) as f32,
            ((v >> 16) & 0xff) as f32,
        )
    };
    let out = r[..n].iter_mut().zip(&mut g[..n]).zip(&mut b[..n]);
    if flip {
        for (((r, g), b), p) in out.zip(pixels[..n].iter().rev()) {
            (*r, *g, *b) = split(p);
        }
    } else {
        for (((r, g), b), p) in out.zip(&pixels[..n]) {
            (*r, *g, *b) = split(p);
        }
    }
}

/// Brightness: multiply by `factor`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn brightness(p: &mut [f32], factor: f32) {
    // Values in [0, 255] times a factor >= 0 stay >= 0: only the top needs
    // the clamp, and only when the factor exceeds 1.
    let factor = factor.max(0.0);
    if factor <= 1.0 {
        for x in p.iter_mut() {
            *x *= factor;
        }
    } else {
        for x in p.iter_mut() {
            *x = min_f(*x * factor, 255.0);
        }
    }
}

/// Mean of the luma image.
pub fn mean_luma(p: &[f32]) -> f32 {
    let n = p.len() / 3;
    let (r, rest) = p.split_at(n);
    let (g, b) = rest.split_at(n);
    (luma_sum(r, g, b) / n.max(1) as f64) as f32
}

/// Sum of the luma of the pixels in `r`, `g`, `b`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn luma_sum(r: &[f32], g: &[f32], b: &[f32]) -> f64 {
    // Sixteen partial sums in fixed-size arrays: vectorises, and keeps f32
    // rounding small.
    let mut acc = [0f32; 16];
    let (r16, r_tail) = r.as_chunks::<16>();
    let (g16, g_tail) = g.as_chunks::<16>();
    let (b16, b_tail) = b.as_chunks::<16>();
    for ((r, g), b) in r16.iter().zip(g16).zip(b16) {
        for k in 0..16 {
            acc[k] += LUMA[0] * r[k] + LUMA[1] * g[k] + LUMA[2] * b[k];
        }
    }
    let mut sum: f64 = acc.iter().map(|&a| a as f64).sum();
    for ((r, g), b) in r_tail.iter().zip(g_tail).zip(b_tail) {
        sum += (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b) as f64;
    }
    sum
}

/// Contrast: blend with the mean of the luma image.
pub fn contrast(p: &mut [f32], factor: f32) {
    let mean = mean_luma(p);
    blend_const(p, factor, mean);
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn blend_const(p: &mut [f32], factor: f32, c: f32) {
    #[inline(always)]
    fn each<const CLAMP: bool>(p: &mut [f32], factor: f32, k: f32) {
        for x in p.iter_mut() {
            *x = clamp_if::<CLAMP>(factor * *x + k);
        }
    }
    let k = (1.0 - factor) * c;
    if convex(factor) {
        each::<false>(p, factor, k)
    } else {
        each::<true>(p, factor, k)
    }
}

/// Whether blending with `factor` is a convex combination (factor in
/// [0, 1]): of two values in [0, 255] it stays in [0, 255] (to within f32
/// rounding, which the output conversion saturates), so the clamp can go.
/// The ops pass the answer on as a const parameter, so each case compiles
/// to its own loop.
#[inline(always)]
fn convex(factor: f32) -> bool {
    (0.0..=1.0).contains(&factor)
}

/// [`clamp255`] when `CLAMP`, else `x` unchanged.
#[inline(always)]
fn clamp_if<const CLAMP: bool>(x: f32) -> f32 {
    if CLAMP { clamp255(x) } else { x }
}

/// Saturation: blend each pixel with its luma.
pub fn saturation(p: &mut [f32], factor: f32) {
    let (r, g, b) = planes_mut(p);
    saturation_rgb(r, g, b, factor);
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn saturation_rgb(r: &mut [f32], g: &mut [f32], b: &mut [f32], factor: f32) {
    #[inline(always)]
    fn each<const CLAMP: bool>(r: &mut [f32], g: &mut [f32], b: &mut [f32], factor: f32) {
        // The luma weights scaled by 1 - factor: (1 - factor) luma in one
        // dot product.
        let kw = LUMA.map(|w| (1.0 - factor) * w);
        let n = r.len().min(g.len()).min(b.len());
        let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        for i in 0..n {
            let kl = kw[0] * r[i] + kw[1] * g[i] + kw[2] * b[i];
            r[i] = clamp_if::<CLAMP>(factor * r[i] + kl);
            g[i] = clamp_if::<CLAMP>(factor * g[i] + kl);
            b[i] = clamp_if::<CLAMP>(factor * b[i] + kl);
        }
    }
    if convex(factor) {
        each::<false>(r, g, b, factor)
    } else {
        each::<true>(r, g, b, factor)
    }
}

/// Grayscale: every channel becomes the luma.
pub fn grayscale(p: &mut [f32]) {
    let (r, g, b) = planes_mut(p);
    grayscale_rgb(r, g, b);
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn grayscale_rgb(r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
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
        // v - (2v - 255) where v >= 128, written with a bit mask: as a
        // plain `if`, the compiler stores only the changed lanes with a
        // masked store, microcoded and as slow as scalar code on some CPUs.
        let v = *x;
        let mask = if v >= 128.0 { u32::MAX } else { 0 };
        *x = v - f32::from_bits((2.0 * v - 255.0).to_bits() & mask);
    }
}

/// Hue: rotate the hue by `shift` of a full turn (torchvision's
/// `adjust_hue` as a float HSV rotation), with arithmetic and selects only.
/// With chroma `cr = max - min` and the pixel's hue in sixths of a turn
/// `6h = base + diff / cr` (base 0, 2, 4 as r, g or b is largest), channel
/// n (5, 3, 1 for r, g, b) comes back as `max - cr clamp(2 - d, 0, 1)`,
/// `d` the distance on the circle of six between `6h + 6 shift + n` and 2.
/// In units of `cr`, for g, that is `u = cr (t + 1) + diff` with
/// `t = base + 6 shift` taken in [-4, 2); r and b are `u +- 2 cr`. All
/// three lie within [-6, 6] cr, so the distance is `min(|u|, 6 cr - |u|)`:
/// no wrapping, no division. Values stay within [min, max] of each pixel's
/// channels, so no clamp is needed.
pub fn hue(p: &mut [f32], shift: f32) {
    let (r, g, b) = planes_mut(p);
    hue_rgb(r, g, b, shift);
}

/// `max(a, b)` for non-NaN values, as one instruction (`f32::max` adds NaN
/// handling).
#[inline(always)]
fn max_f(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `min(a, b)` for non-NaN values, as one instruction.
#[inline(always)]
fn min_f(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn hue_rgb(r: &mut [f32], g: &mut [f32], b: &mut [f32], shift: f32) {
    // `t + 1` for each possible largest channel (base 0, 2, 4 for r, g,
    // b): three constants, so a pixel only selects one.
    let s6 = 6.0 * shift;
    // Three scalars, not an array: an array indexed in the loop lets the
    // choice below compile to a gather.
    let [t_r, t_g, t_b] = [0.0f32, 2.0, 4.0].map(|base| {
        let t = (base + s6).rem_euclid(6.0);
        1.0 + if t >= 2.0 { t - 6.0 } else { t }
    });
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (rr, gg, bb) = (*r, *g, *b);
        let maxc = max_f(max_f(rr, gg), bb);
        let minc = min_f(min_f(rr, gg), bb);
        let cr = maxc - minc;
        // Which channel is largest picks the sector.
        let (t1, diff) = if maxc == rr {
            (t_r, gg - bb)
        } else if maxc == gg {
            (t_g, bb - rr)
        } else {
            (t_b, rr - gg)
        };
        let ug = cr * t1 + diff;
        let cr2 = cr + cr;
        let cr4 = cr2 + cr2;
        let channel = |u: f32| {
            let a = u.abs();
            maxc - min_f(max_f(max_f(cr2 - a, a - cr4), 0.0), cr)
        };
        *r = channel(ug + cr2);
        *g = channel(ug);
        *b = channel(ug - cr2);
    }
}

/// The colour half of a view, fused: interleaved u8 RGBx (`width` x
/// `height`, mirrored when `flip`) -> planar f32 in `dst`, then the `jitter` ops in
/// order, then grayscale when `gray`. Each row is converted and put through
/// every op while it sits in L1, instead of one pass over the whole image
/// per op; contrast, whose mean needs the whole image after the ops before
/// it, splits the work into two such passes. Same results as calling
/// [`to_planes`] and the op functions one after another (the contrast mean
/// is summed row by row, so it may differ in the last bits).
pub fn convert_and_colour(
    src: &[u8],
    width: usize,
    height: usize,
    flip: bool,
    jitter: &[JitterOp],
    gray: bool,
    dst: &mut [f32],
) {
    let n = width * height;
    let (r, g, b) = planes_mut(&mut dst[..3 * n]);
    let split = jitter
        .iter()
        .position(|op| matches!(op, JitterOp::Contrast(_)));
    let (first, second) = match split {
        Some(i) => (&jitter[..i], Some((&jitter[i], &jitter[i + 1..]))),
        None => (jitter, None),
    };
    let w = width.max(1);
    let rows = r
        .chunks_exact_mut(w)
        .zip(g.chunks_exact_mut(w))
        .zip(b.chunks_exact_mut(w))
        .zip(src[..4 * n].chunks_exact(4 * w));
    let mut luma = 0.0;
    for (((r, g), b), src) in rows {
        deinterleave(src, flip, r, g, b);
        apply_row(first, gray && second.is_none(), r, g, b);
        if second.is_some() {
            luma += luma_sum(r, g, b);
        }
    }
    if let Some((&JitterOp::Contrast(factor), rest)) = second {
        let mean = (luma / n.max(1) as f64) as f32;
        let rows = r
            .chunks_exact_mut(w)
            .zip(g.chunks_exact_mut(w))
            .zip(b.chunks_exact_mut(w));
        for ((r, g), b) in rows {
            for plane in [&mut *r, &mut *g, &mut *b] {
                blend_const(plane, factor, mean);
            }
            apply_row(rest, gray, r, g, b);
        }
    }
}

/// Pointwise ops (no contrast) on one row's three planes.
fn apply_row(ops: &[JitterOp], gray: bool, r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
    for op in ops {
        match *op {
            JitterOp::Brightness(f) => {
                for plane in [&mut *r, &mut *g, &mut *b] {
                    brightness(plane, f);
                }
            }
            JitterOp::Saturation(f) => saturation_rgb(r, g, b, f),
            JitterOp::Hue(h) => hue_rgb(r, g, b, h),
            // Split off by the caller: contrast needs the whole image.
            JitterOp::Contrast(_) => {}
        }
    }
    if gray {
        grayscale_rgb(r, g, b);
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

    /// RGBx (4 bytes per pixel, the fourth ignored) -> RGB f32 pixels.
    pub fn to_pixels(src: &[u8], width: usize, height: usize, flip: bool) -> Vec<[f32; 3]> {
        let mut out = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let sx = if flip { width - 1 - x } else { x };
                let i = (y * width + sx) * 4;
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

    /// RGBx noise (the fourth byte is noise too: it must be ignored).
    fn image(w: usize, h: usize, seed: u32) -> Vec<u8> {
        (0..w * h * 4)
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
    fn the_fused_pass_matches_the_ops_one_by_one() {
        use JitterOp::*;
        let (w, h) = (37, 23);
        let orders: [&[JitterOp]; 5] = [
            &[Brightness(1.3), Contrast(0.7), Saturation(1.1), Hue(0.07)],
            &[
                Contrast(1.35),
                Hue(-0.09),
                Brightness(0.65),
                Saturation(0.8),
            ],
            &[Hue(0.02), Saturation(1.2), Brightness(1.1), Contrast(0.62)],
            &[Saturation(0.9), Brightness(1.38), Hue(-0.04), Contrast(1.2)],
            &[],
        ];
        for (seed, ops) in orders.iter().enumerate() {
            let src = image(w, h, seed as u32);
            for (flip, gray) in [(false, false), (true, false), (true, true), (false, true)] {
                let mut want = vec![0f32; 3 * w * h];
                to_planes(&src, w, h, flip, &mut want);
                for op in *ops {
                    match *op {
                        Brightness(f) => brightness(&mut want, f),
                        Contrast(f) => contrast(&mut want, f),
                        Saturation(f) => saturation(&mut want, f),
                        Hue(x) => hue(&mut want, x),
                    }
                }
                if gray {
                    grayscale(&mut want);
                }
                let mut got = vec![0f32; 3 * w * h];
                convert_and_colour(&src, w, h, flip, ops, gray, &mut got);
                assert_close(
                    &got,
                    &want,
                    1e-3,
                    &format!("{ops:?} flip={flip} gray={gray}"),
                );
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
