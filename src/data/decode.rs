//! JPEG bytes -> RGBx pixels, into a buffer the worker owns and reuses.
//!
//! Grayscale, YCbCr, RGB, CMYK and YCCK JPEGs all come out as 8-bit RGB, stored
//! four bytes per pixel (R, G, B, then 255): the layout fast_image_resize's
//! fastest kernels take (its U8x4 bicubic resize is ~13% faster than U8x3 on
//! the benchmark photos, and zune-jpeg writes the fourth byte for free). The
//! buffer grows to the largest image seen and is never shrunk, so steady
//! state decoding allocates nothing of ours (zune-jpeg keeps small
//! per-image tables of its own). Images over the pixel limit are refused
//! from their header, before any pixel is decoded.

use std::panic::{AssertUnwindSafe, catch_unwind};

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
/// RGB-coded, CMYK or YCCK JPEG decodes right only to `RGB` (see
/// [`Decoder::decode`]).
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

pub(crate) fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), CodecError> {
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
    let mut decoder = Decoder::new(max_pixels);
    Ok(decoder.decode(bytes)?.to_rgb())
}

/// A decoded image borrowed from its [`Decoder`].
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    pub width: u32,
    pub height: u32,
    /// `width * height * PIXEL_BYTES` bytes, RGBx, rows top to bottom.
    pub pixels: &'a [u8],
}

/// The default limit on declared pixels: PIL's decompression-bomb
/// threshold (`Image.MAX_IMAGE_PIXELS`), the limit a torchvision user
/// already lives with.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Bytes per pixel of a [`Decoded`] image: R, G, B and an unused fourth.
pub const PIXEL_BYTES: usize = 4;

impl Decoded<'_> {
    /// The image as packed RGB (3 bytes per pixel), for code that is not on
    /// the hot path (previews, tools).
    pub fn to_rgb(&self) -> RgbImage {
        RgbImage {
            width: self.width,
            height: self.height,
            pixels: self
                .pixels
                .chunks_exact(PIXEL_BYTES)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
        }
    }
}

/// A reusable JPEG decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_pixels: u64,
    /// Width and height of the image in `buf` (0 x 0 when none).
    last: (u32, u32),
}

impl Decoder {
    pub fn new(max_pixels: u64) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max_pixels,
            last: (0, 0),
        }
    }

    /// Decodes `jpeg` into the decoder's buffer.
    ///
    /// Never panics: zune-jpeg has panicked on hostile input before, so a
    /// panic inside it is caught here and becomes this image's
    /// [`CodecError::Decode`] (the loader then skips and counts the record).
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<Decoded<'_>, CodecError> {
        self.last = (0, 0);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.decode_into_buffer(jpeg)));
        self.last = outcome.map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            CodecError::Decode(format!("the JPEG decoder panicked: {message}"))
        })??;
        Ok(self.last())
    }

    /// Decodes `jpeg` into `buf`; returns its width and height.
    fn decode_into_buffer(&mut self, jpeg: &[u8]) -> Result<(u32, u32), CodecError> {
        #[cfg(test)]
        if jpeg == tests::PANICKING_INPUT {
            panic!("test hook: the decoder panics");
        }
        let mut dec = jpeg_decoder(jpeg, ColorSpace::RGBA);
        let (width, height) = jpeg_header(&mut dec, self.max_pixels)?;
        // zune-jpeg's RGBA output is right for YCbCr and grayscale sources
        // only: for RGB-coded ones (component ids 'R', 'G', 'B' or Adobe
        // transform 0 with three components, as jpegli writes) it fails, and
        // for CMYK and YCCK (zune-jpeg 0.5) it writes three bytes a pixel
        // into four-byte rows, leaving the rest of each row as the buffer's
        // previous image left it. Every other source therefore decodes as
        // RGB, which zune-jpeg writes whole, and is widened in place: each
        // byte of the output comes from this image.
        let via_rgb = !matches!(
            dec.input_colorspace(),
            Some(ColorSpace::YCbCr | ColorSpace::Luma)
        );
        if via_rgb {
            dec = jpeg_decoder(jpeg, ColorSpace::RGB);
            jpeg_header(&mut dec, self.max_pixels)?;
        }
        let pixels = width as usize * height as usize;
        let bytes = if via_rgb { 3 } else { PIXEL_BYTES };
        let size = dec
            .output_buffer_size()
            .ok_or_else(|| CodecError::CorruptHeader("image size overflows".into()))?;
        if size != pixels * bytes {
            return Err(CodecError::Decode(format!(
                "decoder wants {size} bytes for a {width}x{height} image of {bytes} bytes per pixel"
            )));
        }
        let full = pixels * PIXEL_BYTES;
        if self.buf.len() < full {
            self.buf.resize(full, 0);
        }
        let out = &mut self.buf[..full];
        dec.decode_into(&mut out[..size])
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        if via_rgb {
            widen_rgb_in_place(out);
        }
        Ok((width, height))
    }

    /// The image of the last successful `decode` (empty if it failed).
    pub fn last(&self) -> Decoded<'_> {
        let (width, height) = self.last;
        Decoded {
            width,
            height,
            pixels: &self.buf
                [..(width as usize * height as usize * PIXEL_BYTES).min(self.buf.len())],
        }
    }
}

/// `buf` holds `n` RGB pixels in its first `3n` bytes (`buf.len() == 4n`):
/// spreads them to RGBx. Works from the last pixel back, so every pixel is
/// read before anything is written over it (pixel i moves from `3i` to
/// `4i`, never below where it was).
fn widen_rgb_in_place(buf: &mut [u8]) {
    let n = buf.len() / PIXEL_BYTES;
    for i in (0..n).rev() {
        let (r, g, b) = (buf[3 * i], buf[3 * i + 1], buf[3 * i + 2]);
        buf[4 * i..4 * i + 4].copy_from_slice(&[r, g, b, 255]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::prep::transcode::encode_jpeg;

    /// Bytes on which the decoder panics (test builds only), standing in
    /// for an input that makes zune-jpeg panic.
    pub(crate) const PANICKING_INPUT: &[u8] = b"barlow test: make the decoder panic";

    #[test]
    fn a_panic_inside_the_decoder_is_this_images_decode_error() {
        let mut d = Decoder::new(1 << 20);
        match d.decode(PANICKING_INPUT) {
            Err(CodecError::Decode(m)) => assert!(m.contains("panicked"), "{m}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert_eq!(
            d.last().pixels.len(),
            0,
            "nothing of the failed image is offered"
        );
        // The decoder works on after it.
        let ok = encode_jpeg(&gradient(24, 16), 90).unwrap();
        assert_eq!(d.decode(&ok).unwrap().width, 24);
    }

    /// A smooth test image: red across, green down.
    pub(crate) fn gradient(w: u32, h: u32) -> RgbImage {
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
    fn truncation_is_detected_at_every_cut_inside_the_scan() {
        let jpeg = encode_jpeg(&gradient(40, 40), 90).unwrap();
        for cut in (4..jpeg.len() - 1).step_by(7) {
            let err = check_jpeg_complete(&jpeg[..cut]);
            assert!(err.is_err(), "cut at {cut} of {} passed", jpeg.len());
        }
    }

    #[test]
    fn matches_the_one_shot_decoder_and_reuses_its_buffer() {
        let mut d = Decoder::new(1 << 30);
        for (w, h) in [(64, 48), (17, 33), (64, 48)] {
            let img = RgbImage {
                width: w,
                height: h,
                pixels: (0..w * h * 3).map(|i| (i * 31 % 251) as u8).collect(),
            };
            let jpeg = encode_jpeg(&img, 85).unwrap();
            // zune-jpeg's one-shot decode with its default options.
            let want =
                zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(&jpeg))
                    .decode()
                    .unwrap();
            let got = d.decode(&jpeg).unwrap();
            assert_eq!((got.width, got.height), (w, h));
            assert_eq!(got.pixels.len(), (w * h) as usize * PIXEL_BYTES);
            assert!(got.pixels.chunks(4).all(|p| p[3] == 255), "fourth byte");
            assert_eq!(got.to_rgb().pixels, want);
        }
        assert_eq!(
            d.buf.len(),
            64 * 48 * PIXEL_BYTES,
            "buffer grew beyond the largest image"
        );
    }

    /// An RGB-coded JPEG (component ids 'R', 'G', 'B', as jpegli writes):
    /// zune-jpeg cannot convert it to RGBA, so it takes the RGB path.
    #[test]
    fn rgb_coded_jpegs_decode_too() {
        let (w, h) = (37u32, 21u32);
        let img = RgbImage {
            width: w,
            height: h,
            pixels: (0..w * h * 3).map(|i| (i * 17 % 253) as u8).collect(),
        };
        let mut jpeg = encode_jpeg(&img, 90).unwrap();
        // Rename the three components in the frame header (SOF0) and in
        // the scan header (SOS) that refers to them.
        let find = |jpeg: &[u8], marker: u8| {
            jpeg.windows(2)
                .position(|m| m == [0xFF, marker])
                .expect("marker")
        };
        let sof = find(&jpeg, 0xC0);
        assert_eq!(jpeg[sof + 9], 3, "three components");
        let sos = find(&jpeg, 0xDA);
        assert_eq!(jpeg[sos + 4], 3, "three components in the scan");
        for (c, id) in [b'R', b'G', b'B'].into_iter().enumerate() {
            jpeg[sof + 10 + 3 * c] = id;
            jpeg[sos + 5 + 2 * c] = id;
        }
        let mut one_shot =
            zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(&jpeg));
        let want = one_shot.decode().unwrap();
        assert_eq!(one_shot.input_colorspace(), Some(ColorSpace::RGB));
        let mut d = Decoder::new(1 << 30);
        let got = d.decode(&jpeg).unwrap();
        assert_eq!((got.width, got.height), (w, h));
        assert!(got.pixels.chunks(4).all(|p| p[3] == 255), "fourth byte");
        assert_eq!(got.to_rgb().pixels, want);
    }

    #[test]
    fn refuses_garbage_and_oversized_images() {
        let mut d = Decoder::new(100);
        assert!(d.decode(b"not a jpeg").is_err());
        let img = RgbImage {
            width: 20,
            height: 20,
            pixels: vec![9; 1200],
        };
        let jpeg = encode_jpeg(&img, 85).unwrap();
        assert!(matches!(d.decode(&jpeg), Err(CodecError::TooLarge { .. })));
    }
}
