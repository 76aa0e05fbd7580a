//! Transcoding for the tools that write datasets: decoding any supported
//! format to RGB with a pixel limit enforced *before* allocation,
//! downsizing, and JPEG encoding. JPEG input goes through
//! [`crate::data::decode`], the decoder the loader uses.
//!
//! Nothing here panics on hostile bytes: every failure is a [`CodecError`].

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::data::decode::{CodecError, RgbImage, check_size, decode_jpeg, is_jpeg};

/// Decodes any format this build reads (JPEG, PNG, GIF, BMP, WebP, TIFF,
/// PNM) to RGB, refusing images over `max_pixels` before decoding them.
pub fn decode_any(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    if is_jpeg(bytes) {
        return decode_jpeg(bytes, max_pixels);
    }
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| CodecError::Decode(e.to_string()))
    };
    if reader()?.format().is_none() {
        return Err(CodecError::NotAnImage);
    }
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| CodecError::CorruptHeader(e.to_string()))?;
    check_size(w, h, max_pixels)?;
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    // Decoders may hold a few frames of up to 16 bytes per pixel.
    limits.max_alloc = Some(max_pixels.saturating_mul(64).max(1 << 26));
    r.limits(limits);
    let img = r
        .decode()
        .map_err(|e| CodecError::Decode(e.to_string()))?
        .to_rgb8();
    Ok(RgbImage {
        width: img.width(),
        height: img.height(),
        pixels: img.into_raw(),
    })
}

/// Shrinks `img` so that its longer side is `max_side` (Lanczos-3,
/// antialiased), keeping the aspect ratio. Smaller images come back as is.
pub fn downsize(img: RgbImage, max_side: u32) -> Result<RgbImage, CodecError> {
    let long = img.width.max(img.height);
    if long <= max_side {
        return Ok(img);
    }
    let scale = max_side as f64 / long as f64;
    let w = ((img.width as f64 * scale).round() as u32).clamp(1, max_side);
    let h = ((img.height as f64 * scale).round() as u32).clamp(1, max_side);
    resize(&img, w, h)
}

/// Resizes `img` to exactly `width` x `height` (Lanczos-3).
pub fn resize(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage, CodecError> {
    let src = ImageRef::new(img.width, img.height, &img.pixels, PixelType::U8x3)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)),
        )
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok(RgbImage {
        width,
        height,
        pixels: dst.into_vec(),
    })
}

/// Encodes RGB pixels as a baseline JPEG with 4:2:0 chroma subsampling.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, CodecError> {
    let (w, h) = match (u16::try_from(img.width), u16::try_from(img.height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(CodecError::Encode(format!(
                "{}x{} exceeds JPEG's 65535-pixel side",
                img.width, img.height
            )));
        }
    };
    let mut out = Vec::with_capacity(img.pixels.len() / 8);
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    enc.encode(&img.pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::decode::tests::gradient;
    use crate::data::decode::{check_jpeg_complete, jpeg_dimensions};

    #[test]
    fn encode_then_decode_keeps_size_and_colours() {
        let img = gradient(64, 48);
        let jpeg = encode_jpeg(&img, 95).unwrap();
        assert!(is_jpeg(&jpeg));
        check_jpeg_complete(&jpeg).unwrap();
        assert_eq!(jpeg_dimensions(&jpeg, 1 << 20).unwrap(), (64, 48));
        let back = decode_any(&jpeg, 1 << 20).unwrap();
        assert_eq!((back.width, back.height), (64, 48));
        let max_err = img
            .pixels
            .iter()
            .zip(&back.pixels)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max_err < 24, "max error {max_err}");
    }

    #[test]
    fn pixel_limit_applies_before_decoding() {
        let jpeg = encode_jpeg(&gradient(100, 100), 90).unwrap();
        assert!(matches!(
            jpeg_dimensions(&jpeg, 9_999),
            Err(CodecError::TooLarge { pixels: 10_000, .. })
        ));
        assert!(matches!(
            decode_any(&jpeg, 9_999),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn downsize_keeps_aspect() {
        let small = downsize(gradient(300, 150), 100).unwrap();
        assert_eq!((small.width, small.height), (100, 50));
        let same = downsize(gradient(80, 60), 100).unwrap();
        assert_eq!((same.width, same.height), (80, 60));
    }

    #[test]
    fn text_is_not_an_image() {
        assert_eq!(
            decode_any(b"hello, world\n", 1000),
            Err(CodecError::NotAnImage)
        );
        assert_eq!(decode_any(b"", 1000), Err(CodecError::Empty));
    }
}
