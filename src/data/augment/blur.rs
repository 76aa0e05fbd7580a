//! Gaussian blur: a true separable Gaussian (kernel radius ceil(3 sigma),
//! edges replicated) on planar f32 images. The reference (Pillow's
//! GaussianBlur) approximates the same Gaussian with three box passes; see
//! the latitude `docs/method.md` states. Vectorised kernel plus a scalar reference.
//!
//! Each plane is blurred in one sweep down its rows: a row is filtered
//! horizontally into a ring of the last `2 radius + 2` such rows (at most
//! 12.5 KiB for a 224-px view at the reference's largest sigma, so it stays in L1),
//! and as soon as the ring holds every row the next two output rows need,
//! they are filtered vertically out of the ring together (each ring load
//! feeds both) and written back in place. No full-size intermediate image
//! exists. A grayscale view's three equal planes are blurred once
//! ([`blur_equal_planes`]).

use multiversion::multiversion;

/// `a * b + c`, as one fused instruction when `fma`. `f32::mul_add` is
/// exact fused arithmetic everywhere, so in a clone without FMA hardware it
/// would be a slow library call; each `multiversion` clone passes its own
/// compile-time answer from [`has_fma!`]. The two forms differ in the last
/// bit of an f32, so a view blurred on a CPU with FMA may differ by one
/// level, at most, from the same view blurred without it; on one machine
/// the result never depends on the thread count.
#[inline(always)]
fn madd(fma: bool, a: f32, b: f32, c: f32) -> f32 {
    if fma { a.mul_add(b, c) } else { a * b + c }
}

/// Whether the `multiversion` clone this expands in has FMA (x86-64 with
/// the FMA extension, every AArch64).
macro_rules! has_fma {
    () => {
        multiversion::target::target_cfg_f!(any(target_feature = "fma", target_arch = "aarch64"))
    };
}

/// Scratch a worker owns and reuses for blurring.
#[derive(Debug, Default)]
pub struct BlurScratch {
    kernel: Vec<f32>,
    /// Horizontally filtered rows, `kernel.len() + 1` of them.
    ring: Vec<f32>,
    /// One source row with its edges replicated `radius` times each side.
    padded: Vec<f32>,
}

/// The normalised 1-D Gaussian for `sigma`, radius ceil(3 sigma) (at most
/// 30, reached at sigma 10), written into `out` (reused).
pub fn gaussian_kernel(sigma: f32, out: &mut Vec<f32>) {
    let radius = ((3.0 * sigma).ceil().max(1.0) as usize).min(MAX_TAPS / 2);
    out.clear();
    let two_s2 = 2.0 * sigma * sigma;
    for i in 0..=2 * radius {
        let d = i as f32 - radius as f32;
        out.push((-d * d / two_s2).exp());
    }
    let sum: f32 = out.iter().sum();
    for k in out.iter_mut() {
        *k /= sum;
    }
}

/// Blurs each of the three `width` x `height` planes in `p` in place.
pub fn blur(p: &mut [f32], width: usize, height: usize, sigma: f32, s: &mut BlurScratch) {
    blur_planes(p, width, height, sigma, s, false);
}

/// [`blur`] for an image whose three planes are equal (a grayscale view):
/// blurs the first and copies it over the other two, bit for bit what
/// [`blur`] gives, in a third of the time.
pub fn blur_equal_planes(
    p: &mut [f32],
    width: usize,
    height: usize,
    sigma: f32,
    s: &mut BlurScratch,
) {
    blur_planes(p, width, height, sigma, s, true);
}

fn blur_planes(
    p: &mut [f32],
    width: usize,
    height: usize,
    sigma: f32,
    s: &mut BlurScratch,
    equal: bool,
) {
    let n = width * height;
    if n == 0 {
        return;
    }
    gaussian_kernel(sigma, &mut s.kernel);
    let taps = s.kernel.len();
    s.ring.resize((taps + 1) * width, 0.0);
    s.padded.resize(width + taps - 1, 0.0);
    let planes = if equal { 1 } else { 3 };
    for plane in p[..planes * n].chunks_exact_mut(n) {
        blur_plane(plane, width, height, &s.kernel, &mut s.ring, &mut s.padded);
    }
    if equal {
        let (first, rest) = p[..3 * n].split_at_mut(n);
        rest[..n].copy_from_slice(first);
        rest[n..].copy_from_slice(first);
    }
}

/// Lanes accumulated in registers before one store: each output value is
/// written once instead of once per tap.
const LANES: usize = 32;

/// Longest kernel [`gaussian_kernel`] makes (radius 30).
const MAX_TAPS: usize = 61;

/// `sum_j k[j] * src[offsets[j] + at..][..LANES]`, accumulated in
/// registers (the vertical filter of a single row: the last one of an odd
/// height; pairs of rows go through [`fir2`]).
#[inline(always)]
fn fir(fma: bool, k: &[f32], offsets: &[usize], src: &[f32], at: usize) -> [f32; LANES] {
    let mut acc = [0f32; LANES];
    for (&kj, &o) in k.iter().zip(offsets) {
        let s = &src[o + at..o + at + LANES];
        for l in 0..LANES {
            acc[l] = madd(fma, kj, s[l], acc[l]);
        }
    }
    acc
}

/// One output value: `sum_j k[j] * src[offsets[j] + at]`.
#[inline(always)]
fn fir1(fma: bool, k: &[f32], offsets: &[usize], src: &[f32], at: usize) -> f32 {
    k.iter()
        .zip(offsets)
        .fold(0.0, |acc, (&kj, &o)| madd(fma, kj, src[o + at], acc))
}

/// Filters one output row: `out[x] = sum_j k[j] * src[offsets[j] + x]`.
#[inline(always)]
fn filter_row(fma: bool, k: &[f32], offsets: &[usize], src: &[f32], out: &mut [f32]) {
    let (chunks, tail) = out.as_chunks_mut::<LANES>();
    for (c, o) in chunks.iter_mut().enumerate() {
        *o = fir(fma, k, offsets, src, c * LANES);
    }
    let done = chunks.len() * LANES;
    for (x, o) in tail.iter_mut().enumerate() {
        *o = fir1(fma, k, offsets, src, done + x);
    }
}

/// One horizontally filtered row: `out[x] = sum_j k[j] * src[x + j]`
/// (`src` is the padded row). The tap offsets are the tap indices
/// themselves, so no offset table is read.
#[inline(always)]
fn filter_row_h(fma: bool, k: &[f32], src: &[f32], out: &mut [f32]) {
    let (chunks, tail) = out.as_chunks_mut::<LANES>();
    for (c, o) in chunks.iter_mut().enumerate() {
        let window = &src[c * LANES..c * LANES + k.len() - 1 + LANES];
        let mut acc = [0f32; LANES];
        for (j, &kj) in k.iter().enumerate() {
            let s = &window[j..j + LANES];
            for l in 0..LANES {
                acc[l] = madd(fma, kj, s[l], acc[l]);
            }
        }
        *o = acc;
    }
    let done = chunks.len() * LANES;
    for (x, o) in tail.iter_mut().enumerate() {
        *o = k
            .iter()
            .enumerate()
            .fold(0.0, |acc, (j, &kj)| madd(fma, kj, src[done + x + j], acc));
    }
}

/// Two vertically adjacent outputs at once: `a` from the taps at
/// `offsets[..taps]`, `b` (one row further down) from `offsets[1..=taps]`.
/// Each source vector is loaded once and feeds both, halving the loads of
/// the vertical pass.
#[inline(always)]
fn fir2(
    fma: bool,
    k: &[f32],
    offsets: &[usize],
    src: &[f32],
    at: usize,
) -> ([f32; LANES], [f32; LANES]) {
    let taps = k.len();
    let mut a = [0f32; LANES];
    let mut b = [0f32; LANES];
    let s = &src[offsets[0] + at..offsets[0] + at + LANES];
    for l in 0..LANES {
        a[l] = k[0] * s[l];
    }
    for j in 1..taps {
        let o = offsets[j];
        let s = &src[o + at..o + at + LANES];
        let (ka, kb) = (k[j], k[j - 1]);
        for l in 0..LANES {
            a[l] = madd(fma, ka, s[l], a[l]);
            b[l] = madd(fma, kb, s[l], b[l]);
        }
    }
    let o = offsets[taps];
    let s = &src[o + at..o + at + LANES];
    for l in 0..LANES {
        b[l] = madd(fma, k[taps - 1], s[l], b[l]);
    }
    (a, b)
}

/// Filters two output rows, `out_a` with `offsets[..taps]` and `out_b`
/// with `offsets[1..=taps]` (see [`fir2`]).
#[inline(always)]
fn filter_rows2(
    fma: bool,
    k: &[f32],
    offsets: &[usize],
    src: &[f32],
    out_a: &mut [f32],
    out_b: &mut [f32],
) {
    let taps = k.len();
    let (chunks_a, tail_a) = out_a.as_chunks_mut::<LANES>();
    let (chunks_b, tail_b) = out_b.as_chunks_mut::<LANES>();
    for (c, (oa, ob)) in chunks_a.iter_mut().zip(chunks_b.iter_mut()).enumerate() {
        (*oa, *ob) = fir2(fma, k, offsets, src, c * LANES);
    }
    let done = chunks_a.len() * LANES;
    for (x, (oa, ob)) in tail_a.iter_mut().zip(tail_b.iter_mut()).enumerate() {
        *oa = fir1(fma, k, &offsets[..taps], src, done + x);
        *ob = fir1(fma, k, &offsets[1..=taps], src, done + x);
    }
}

/// Blurs one plane in place (see the module docs). `ring` holds
/// `(k.len() + 1) * width` values, `padded` `width + k.len() - 1`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn blur_plane(
    plane: &mut [f32],
    width: usize,
    height: usize,
    k: &[f32],
    ring: &mut [f32],
    padded: &mut [f32],
) {
    let fma = has_fma!();
    let taps = k.len();
    let r = taps / 2;
    // The ring keeps the rows two adjacent outputs need.
    let slots = taps + 1;
    let mut down = [0usize; MAX_TAPS + 1];
    // Ring slot of source row q is q mod slots. A `%` per tap per row cost
    // more than the filtering, so it is taken once per row and the taps'
    // slots follow from y's by at most one wrap.
    let mut next = 0;
    let mut y = 0;
    while y < height {
        // Two output rows (one for the last of an odd height).
        let pair = y + 1 < height;
        let last = y + usize::from(pair);
        // They need source rows up to last + r (clamped to the last).
        while next <= (last + r).min(height - 1) {
            let row = &plane[next * width..(next + 1) * width];
            padded[..r].fill(row[0]);
            padded[r..r + width].copy_from_slice(row);
            padded[r + width..].fill(row[width - 1]);
            let at = (next % slots) * width;
            filter_row_h(fma, k, padded, &mut ring[at..at + width]);
            next += 1;
        }
        // The ring holds the last `slots` filtered rows, which include
        // every row in [y - r, last + r] (clamped); rows y and last of the
        // plane have already been read, so they can be overwritten.
        let slot_y = y % slots;
        for (j, o) in down[..=taps].iter_mut().enumerate() {
            let row = (y + j).saturating_sub(r).min(height - 1);
            // row - y is within [-r, r + 1]: one wrap at most either way.
            let slot = (slot_y + slots + row) - y;
            let slot = if slot >= 2 * slots {
                slot - 2 * slots
            } else if slot >= slots {
                slot - slots
            } else {
                slot
            };
            *o = slot * width;
        }
        let out = &mut plane[y * width..(last + 1) * width];
        if pair {
            let (a, b) = out.split_at_mut(width);
            filter_rows2(fma, k, &down[..=taps], ring, a, b);
        } else {
            filter_row(fma, k, &down[..taps], ring, out);
        }
        y = last + 1;
    }
}

/// Pixel-by-pixel reference: the same Gaussian, edges replicated.
pub fn reference(p: &mut [f32], width: usize, height: usize, sigma: f32) {
    let mut k = Vec::new();
    gaussian_kernel(sigma, &mut k);
    let r = (k.len() / 2) as isize;
    let n = width * height;
    let at = |x: isize, lim: usize| x.clamp(0, lim as isize - 1) as usize;
    for c in 0..3 {
        let plane = p[c * n..(c + 1) * n].to_vec();
        let mut tmp = vec![0f32; n];
        for y in 0..height {
            for x in 0..width {
                let mut s = 0.0;
                for (j, kj) in k.iter().enumerate() {
                    s += kj * plane[y * width + at(x as isize + j as isize - r, width)];
                }
                tmp[y * width + x] = s;
            }
        }
        for y in 0..height {
            for x in 0..width {
                let mut s = 0.0;
                for (j, kj) in k.iter().enumerate() {
                    s += kj * tmp[at(y as isize + j as isize - r, height) * width + x];
                }
                p[c * n + y * width + x] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_normalised_symmetric_and_sized_by_sigma() {
        let mut k = Vec::new();
        gaussian_kernel(2.0, &mut k);
        assert_eq!(k.len(), 13);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((k[0] - k[12]).abs() < 1e-7 && k[6] > k[5]);
        gaussian_kernel(0.1, &mut k);
        assert_eq!(k.len(), 3);
        assert!(k[1] > 0.999, "sigma 0.1 is nearly the identity");
    }

    #[test]
    fn vectorised_blur_matches_the_reference_and_keeps_flat_images_flat() {
        let noise = |w: usize, h: usize| -> Vec<f32> {
            (0..3 * w * h)
                .map(|i| ((i as u32).wrapping_mul(2654435761) >> 24) as f32)
                .collect()
        };
        // 150 wide: four blocks of LANES and a scalar tail; 29 wide: the
        // tail alone. Odd heights end on a single output row; heights 1-3
        // are shorter than the kernel (sigma 5: 31 taps), so every tap
        // clamps to an edge row. One scratch reused throughout.
        let mut scratch = BlurScratch::default();
        for (w, h) in [(29, 17), (150, 9), (64, 1), (40, 2), (33, 3), (1, 6)] {
            let src = noise(w, h);
            for sigma in [0.1f32, 0.7, 2.0, 5.0] {
                let mut fast = src.clone();
                blur(&mut fast, w, h, sigma, &mut scratch);
                let mut slow = src.clone();
                reference(&mut slow, w, h, sigma);
                let worst = fast
                    .iter()
                    .zip(&slow)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-3, "{w}x{h}, sigma {sigma}: {worst}");
            }
        }
        // Equal planes (a grayscale view): the shortcut gives the same bits.
        let (w, h) = (29, 17);
        let gray: Vec<f32> = noise(w, h)[..w * h].repeat(3);
        let mut full = gray.clone();
        blur(&mut full, w, h, 1.3, &mut scratch);
        let mut short = gray.clone();
        blur_equal_planes(&mut short, w, h, 1.3, &mut scratch);
        assert_eq!(full, short);
        assert_ne!(full, gray, "it did blur");
        let src = noise(w, h);
        let mut flat = vec![77.0f32; 3 * w * h];
        blur(&mut flat, w, h, 2.0, &mut BlurScratch::default());
        assert!(flat.iter().all(|v| (v - 77.0).abs() < 1e-3));
        // Blurring lowers the variance of noise.
        let var = |v: &[f32]| {
            let m = v.iter().sum::<f32>() / v.len() as f32;
            v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32
        };
        let mut b = src.clone();
        blur(&mut b, w, h, 1.5, &mut BlurScratch::default());
        assert!(var(&b) < var(&src) / 4.0);
    }
}
