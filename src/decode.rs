//! JPEG bytes -> RGBx pixels, into a buffer the worker owns and reuses.
//!
//! Grayscale, YCbCr, CMYK and YCCK JPEGs all come out as 8-bit RGB, stored
//! four bytes per pixel (R, G, B, then 255): the layout fast_image_resize's
//! fastest kernels take (its U8x4 bicubic resize is ~13% faster than U8x3 on
//! the benchmark photos, and zune-jpeg writes the fourth byte for free). The
//! buffer grows to the largest image seen and is never shrunk, so steady
//! state decoding allocates nothing of ours (zune-jpeg keeps small
//! per-image tables of its own). Images over the pixel limit are refused
//! from their header, before any pixel is decoded.

use crate::codec::{self, CodecError, RgbImage};

/// A decoded image borrowed from its [`Decoder`].
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    pub width: u32,
    pub height: u32,
    /// `width * height * PIXEL_BYTES` bytes, RGBx, rows top to bottom.
    pub pixels: &'a [u8],
}

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
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<Decoded<'_>, CodecError> {
        self.last = (0, 0);
        let mut dec = codec::jpeg_decoder(jpeg);
        let (width, height) = codec::jpeg_header(&mut dec, self.max_pixels)?;
        let pixels = width as u64 * height as u64;
        let size = dec
            .output_buffer_size()
            .ok_or_else(|| CodecError::CorruptHeader("image size overflows".into()))?;
        if size != pixels as usize * PIXEL_BYTES {
            return Err(CodecError::Decode(format!(
                "decoder wants {size} bytes for a {width}x{height} RGBx image"
            )));
        }
        if self.buf.len() < size {
            self.buf.resize(size, 0);
        }
        let out = &mut self.buf[..size];
        dec.decode_into(out)
            .map_err(|e| CodecError::Decode(e.to_string()))?;
        self.last = (width, height);
        Ok(Decoded {
            width,
            height,
            pixels: out,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_jpeg;

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
