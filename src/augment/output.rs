//! The last touch of a pixel: planar f32 in [0, 255] -> the batch slot,
//! either u8 (rounded; normalisation then happens on the device, 4x less
//! host-to-device traffic) or f32 normalised with the ImageNet mean and std.

use multiversion::multiversion;

/// ImageNet channel means and standard deviations (SPEC).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Rounds to u8 (values are already within [0, 255]).
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn write_u8(planes: &[f32], out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(planes) {
        // `max` turns NaN into 0 (`clamp` would keep it), so the value is
        // finite and in [0.5, 255.5).
        #[allow(clippy::manual_clamp)]
        let x = v.max(0.0).min(255.0) + 0.5;
        // SAFETY: x is finite and within i32's range (see above).
        *o = unsafe { x.to_int_unchecked::<i32>() } as u8;
    }
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
            .map(|v| v.clamp(0.0, 255.0).round() as u8)
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
