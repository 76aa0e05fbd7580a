//! Image codec facts for the tools that write datasets: JPEG header and
//! completeness checks, decoding any supported format to RGB with a pixel
//! limit enforced *before* allocation, downsizing, and JPEG encoding.
//!
//! Nothing here panics on hostile bytes: every failure is a [`CodecError`].
//! (The training loader decodes on its own hot path; this module serves the
//! offline tools.)

use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Why bytes could not be turned into (or from) an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty file")]
    Empty,
    #[error("not an image (unrecognised format)")]
    NotAnImage,
    #[error("corrupt header: {0}")]
    CorruptHeader(String),
    #[error("image has a zero dimension ({width}x{height})")]
    ZeroSize { width: u32, height: u32 },
    #[error("declared size {width}x{height} = {pixels} pixels exceeds the limit of {max} pixels")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        max: u64,
    },
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("encode failed: {0}")]
    Encode(String),
}

/// An 8-bit RGB image, rows top to bottom, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// True when `bytes` start like a JPEG file (SOI followed by a marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Largest side zune-jpeg is allowed to see; JPEG itself stores sides as u16,
/// the real limit is `max_pixels`.
const JPEG_MAX_SIDE: usize = u16::MAX as usize;

/// A zune-jpeg decoder for `bytes` with output colour space `out`. With
/// `RGBA` (RGBx: RGB plus a fourth byte, 255) every JPEG colour space
/// zune-jpeg converts (gray, YCbCr, CMYK, YCCK) comes out the same; an
/// RGB-coded JPEG only decodes to `RGB` (see [`crate::decode`]).
pub(crate) fn jpeg_decoder(bytes: &[u8], out: ColorSpace) -> JpegDecoder<ZCursor<&[u8]>> {
    let options = DecoderOptions::new_fast()
        .set_max_width(JPEG_MAX_SIDE)
        .set_max_height(JPEG_MAX_SIDE)
        .jpeg_set_out_colorspace(out);
    JpegDecoder::new_with_options(ZCursor::new(bytes), options)
}

/// Reads the headers of `dec`: width and height, checked against
/// `max_pixels` before anything is decoded.
pub(crate) fn jpeg_header(
    dec: &mut JpegDecoder<ZCursor<&[u8]>>,
    max_pixels: u64,
) -> Result<(u32, u32), CodecError> {
    dec.decode_headers()
        .map_err(|e| CodecError::CorruptHeader(e.to_string()))?;
    let info = dec
        .info()
        .ok_or_else(|| CodecError::CorruptHeader("no frame header".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_size(w, h, max_pixels)?;
    Ok((w, h))
}

/// Width and height from a JPEG's headers, checked against `max_pixels`.
pub fn jpeg_dimensions(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), CodecError> {
    jpeg_header(&mut jpeg_decoder(bytes, ColorSpace::RGBA), max_pixels)
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), CodecError> {
    if width == 0 || height == 0 {
        return Err(CodecError::ZeroSize { width, height });
    }
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(CodecError::TooLarge {
            width,
            height,
            pixels,
            max: max_pixels,
        });
    }
    Ok(())
}

/// Checks that a JPEG's segments are whole and that an end-of-image marker
/// follows the first scan. Entropy-coded data never contains the byte pair
/// FF D9 (encoders stuff every FF with 00), so its absence after the first
/// start-of-scan means the file was cut short.
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<(), CodecError> {
    let n = bytes.len();
    let mut p = 2; // past SOI
    loop {
        // Skip to the next marker; fill bytes (FF FF ...) are allowed.
        while p < n && bytes[p] != 0xFF {
            p += 1;
        }
        while p < n && bytes[p] == 0xFF {
            p += 1;
        }
        if p >= n {
            return Err(CodecError::Truncated(format!(
                "file ends at byte {n} inside the headers, before any image data"
            )));
        }
        let marker = bytes[p];
        p += 1;
        match marker {
            // Standalone markers: SOI, TEM, RSTn.
            0xD8 | 0x01 | 0xD0..=0xD7 => {}
            0xD9 => {
                return Err(CodecError::Truncated(format!(
                    "end-of-image marker at byte {} before any image data",
                    p - 2
                )));
            }
            0xDA => {
                return if memchr::memmem::rfind(&bytes[p..], &[0xFF, 0xD9]).is_some() {
                    Ok(())
                } else {
                    Err(CodecError::Truncated(format!(
                        "no end-of-image marker after the scan starting at byte {}",
                        p - 2
                    )))
                };
            }
            _ => {
                if p + 2 > n {
                    return Err(CodecError::Truncated(format!(
                        "segment length of marker FF{marker:02X} at byte {} is cut off",
                        p - 2
                    )));
                }
                let len = u16::from_be_bytes([bytes[p], bytes[p + 1]]) as usize;
                if len < 2 {
                    return Err(CodecError::CorruptHeader(format!(
                        "segment FF{marker:02X} at byte {} has length {len}",
                        p - 2
                    )));
                }
                p += len;
            }
        }
    }
}

/// Decodes a JPEG (baseline or progressive; gray, YCbCr, CMYK or YCCK) to RGB.
pub fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, CodecError> {
    let mut decoder = crate::decode::Decoder::new(max_pixels);
    Ok(decoder.decode(bytes)?.to_rgb())
}

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

    fn gradient(w: u32, h: u32) -> RgbImage {
        let mut pixels = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
            }
        }
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }

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
    fn truncation_is_detected_at_every_cut_inside_the_scan() {
        let jpeg = encode_jpeg(&gradient(40, 40), 90).unwrap();
        for cut in (4..jpeg.len() - 1).step_by(7) {
            let err = check_jpeg_complete(&jpeg[..cut]);
            assert!(err.is_err(), "cut at {cut} of {} passed", jpeg.len());
        }
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
