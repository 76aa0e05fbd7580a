//! The last touch of a pixel: planar f32 in [0, 255] -> the batch slot,
//! either u8 (rounded to nearest, ties to even; a quarter of f32's bytes,
//! uploaded as u8 and normalised on the device by the trainer) or f32
//! normalised with the ImageNet mean and std.

use multiversion::multiversion;

/// ImageNet channel means and standard deviations (the reference's).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Rounds to the nearest u8, ties to even, saturating: below 0 (and NaN)
/// gives 0, above 255 gives 255.
pub fn write_u8(planes: &[f32], out: &mut [u8]) {
    let n = planes.len().min(out.len());
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        done = unsafe { write_u8_avx2(&planes[..n], &mut out[..n]) };
    }
    write_u8_tail(&planes[done..n], &mut out[done..n]);
}

/// The same rounding written plainly, for what [`write_u8_avx2`] leaves
/// (and for CPUs without AVX2).
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn write_u8_tail(planes: &[f32], out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(planes) {
        // `max` turns NaN into 0 (`clamp` would keep it), so the value is
        // finite and in [0, 255].
        #[allow(clippy::manual_clamp)]
        let x = v.max(0.0).min(255.0).round_ties_even();
        // SAFETY: x is finite and within i32's range (see above).
        *o = unsafe { x.to_int_unchecked::<i32>() } as u8;
    }
}

/// 32 values at a time: convert to i32 rounding to nearest even (the
/// default MXCSR mode, which Rust never changes), then narrow with the
/// saturating packs, which also do the clamping (NaN converts to
/// `i32::MIN`, which saturates to 0). Returns how many values it wrote (a
/// multiple of 32).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn write_u8_avx2(planes: &[f32], out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let (chunks, _) = planes.as_chunks::<32>();
    let (outs, _) = out.as_chunks_mut::<32>();
    // The packs work within 128-bit halves; this puts the four 8-value
    // groups back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (v, o) in chunks.iter().zip(outs.iter_mut()) {
        // SAFETY: `v` is 32 f32s: four unaligned 8-lane loads; `o` is 32
        // bytes: one unaligned 32-byte store.
        unsafe {
            let p = v.as_ptr();
            let a = _mm256_cvtps_epi32(_mm256_loadu_ps(p));
            let b = _mm256_cvtps_epi32(_mm256_loadu_ps(p.add(8)));
            let c = _mm256_cvtps_epi32(_mm256_loadu_ps(p.add(16)));
            let d = _mm256_cvtps_epi32(_mm256_loadu_ps(p.add(24)));
            let ab = _mm256_packus_epi32(a, b);
            let cd = _mm256_packus_epi32(c, d);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
            _mm256_storeu_si256(o.as_mut_ptr().cast(), bytes);
        }
    }
    chunks.len().min(outs.len()) * 32
}

/// `(v / 255 - mean[c]) / std[c]` for each of the three planes.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn write_f32(planes: &[f32], out: &mut [f32]) {
    let n = planes.len() / 3;
    for c in 0..3 {
        let scale = 1.0 / (255.0 * STD[c]);
        let shift = -MEAN[c] / STD[c];
        for (o, &v) in out[c * n..(c + 1) * n]
            .iter_mut()
            .zip(&planes[c * n..(c + 1) * n])
        {
            *o = v * scale + shift;
        }
    }
}

/// Scalar references.
pub mod reference {
    pub fn write_u8(planes: &[f32]) -> Vec<u8> {
        planes
            .iter()
            .map(|v| v.round_ties_even() as u8) // `as` saturates, NaN -> 0
            .collect()
    }

    pub fn write_f32(planes: &[f32]) -> Vec<f32> {
        let n = planes.len() / 3;
        planes
            .iter()
            .enumerate()
            .map(|(i, v)| (v / 255.0 - super::MEAN[i / n]) / super::STD[i / n])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_match_their_references() {
        let planes: Vec<f32> = (0..3 * 101).map(|i| (i as f32 * 2.53) % 255.0).collect();
        let mut u = vec![0u8; planes.len()];
        write_u8(&planes, &mut u);
        assert_eq!(u, reference::write_u8(&planes));
        // Ties go to even, out-of-range values saturate, NaN is 0; 70
        // values: two blocks of 32 and a tail, with the odd ones in both.
        let odd = [
            0.5,
            1.5,
            2.5,
            254.5,
            -0.4,
            -3.0,
            255.4,
            300.0,
            f32::NAN,
            127.49,
        ];
        let want = [0u8, 2, 2, 254, 0, 0, 255, 255, 0, 127];
        let edges: Vec<f32> = (0..70).map(|i| odd[i % odd.len()]).collect();
        let mut e = vec![9u8; edges.len()];
        write_u8(&edges, &mut e);
        assert_eq!(e, reference::write_u8(&edges));
        for (i, &b) in e.iter().enumerate() {
            assert_eq!(b, want[i % want.len()], "value {}", edges[i]);
        }
        let mut f = vec![0f32; planes.len()];
        write_f32(&planes, &mut f);
        for (a, b) in f.iter().zip(reference::write_f32(&planes)) {
            assert!((a - b).abs() < 1e-5);
        }
        // White in the red plane normalises to (1 - 0.485) / 0.229.
        let mut one = vec![0f32; 3];
        write_f32(&[255.0, 0.0, 0.0], &mut one);
        assert!((one[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((one[1] + 0.456 / 0.224).abs() < 1e-5);
    }
}
