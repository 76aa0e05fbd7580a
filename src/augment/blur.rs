//! Gaussian blur: a true separable Gaussian (kernel radius ceil(3 sigma),
//! edges replicated) on planar f32 images. The reference (Pillow's
//! GaussianBlur) approximates the same Gaussian with three box passes; see
//! SPEC's latitude note. Vectorised kernel plus a scalar reference.

use multiversion::multiversion;

/// Scratch a worker owns and reuses for blurring.
#[derive(Debug, Default)]
pub struct BlurScratch {
    kernel: Vec<f32>,
    plane: Vec<f32>,
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
    gaussian_kernel(sigma, &mut s.kernel);
    let n = width * height;
    s.plane.resize(n, 0.0);
    let radius = s.kernel.len() / 2;
    s.padded.resize(width + 2 * radius, 0.0);
    for c in 0..3 {
        let plane = &mut p[c * n..(c + 1) * n];
        horizontal(plane, &mut s.plane, width, height, &s.kernel, &mut s.padded);
        vertical(&s.plane, plane, width, height, &s.kernel);
    }
}

/// Lanes accumulated in registers before one store: each output value is
/// written once instead of once per tap.
const LANES: usize = 32;

/// Longest kernel [`gaussian_kernel`] makes (radius 30).
const MAX_TAPS: usize = 61;

/// `sum_j k[j] * src[offsets[j] + at..][..LANES]`, accumulated in
/// registers. The offsets are computed once per row by the caller, so a
/// tap costs one bounds check, one broadcast and the multiply-adds.
#[inline(always)]
fn fir(k: &[f32], offsets: &[usize], src: &[f32], at: usize) -> [f32; LANES] {
    let mut acc = [0f32; LANES];
    for (&kj, &o) in k.iter().zip(offsets) {
        let s = &src[o + at..o + at + LANES];
        for l in 0..LANES {
            acc[l] += kj * s[l];
        }
    }
    acc
}

/// One output value: `sum_j k[j] * src[offsets[j] + at]`.
#[inline(always)]
fn fir1(k: &[f32], offsets: &[usize], src: &[f32], at: usize) -> f32 {
    k.iter()
        .zip(offsets)
        .map(|(&kj, &o)| kj * src[o + at])
        .sum()
}

/// Filters one output row: `out[x] = sum_j k[j] * src[offsets[j] + x]`.
#[inline(always)]
fn filter_row(k: &[f32], offsets: &[usize], src: &[f32], out: &mut [f32]) {
    let (chunks, tail) = out.as_chunks_mut::<LANES>();
    for (c, o) in chunks.iter_mut().enumerate() {
        *o = fir(k, offsets, src, c * LANES);
    }
    let done = chunks.len() * LANES;
    for (x, o) in tail.iter_mut().enumerate() {
        *o = fir1(k, offsets, src, done + x);
    }
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn horizontal(
    src: &[f32],
    dst: &mut [f32],
    width: usize,
    height: usize,
    k: &[f32],
    padded: &mut [f32],
) {
    let r = k.len() / 2;
    let offsets: [usize; MAX_TAPS] = std::array::from_fn(|j| j);
    let offsets = &offsets[..k.len()];
    for y in 0..height {
        let row = &src[y * width..(y + 1) * width];
        padded[..r].fill(row[0]);
        padded[r..r + width].copy_from_slice(row);
        padded[r + width..].fill(row[width - 1]);
        filter_row(k, offsets, padded, &mut dst[y * width..(y + 1) * width]);
    }
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn vertical(src: &[f32], dst: &mut [f32], width: usize, height: usize, k: &[f32]) {
    let r = k.len() as isize / 2;
    let mut offsets = [0usize; MAX_TAPS];
    for y in 0..height {
        for (j, o) in offsets[..k.len()].iter_mut().enumerate() {
            *o = (y as isize + j as isize - r).clamp(0, height as isize - 1) as usize * width;
        }
        filter_row(
            k,
            &offsets[..k.len()],
            src,
            &mut dst[y * width..(y + 1) * width],
        );
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
        // tail alone. One scratch reused throughout.
        let mut scratch = BlurScratch::default();
        for (w, h) in [(29, 17), (150, 9)] {
            let src = noise(w, h);
            for sigma in [0.1f32, 0.7, 2.0] {
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
        let (w, h) = (29, 17);
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
