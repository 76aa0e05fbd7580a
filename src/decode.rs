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

use zune_jpeg::zune_core::colorspace::ColorSpace;

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
        let mut dec = codec::jpeg_decoder(jpeg, ColorSpace::RGBA);
        let (width, height) = codec::jpeg_header(&mut dec, self.max_pixels)?;
        // zune-jpeg writes RGBA from every colour space except RGB itself
        // (component ids 'R', 'G', 'B' or Adobe transform 0, as jpegli
        // writes), which it only copies out as RGB: decode those as RGB and
        // widen in place.
        let rgb_coded = dec.input_colorspace() == Some(ColorSpace::RGB);
        if rgb_coded {
            dec = codec::jpeg_decoder(jpeg, ColorSpace::RGB);
            codec::jpeg_header(&mut dec, self.max_pixels)?;
        }
        let pixels = width as usize * height as usize;
        let bytes = if rgb_coded { 3 } else { PIXEL_BYTES };
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
        if rgb_coded {
            widen_rgb_in_place(out);
        }
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
