//! The decision for one input file: keep its bytes, re-encode them, or
//! reject it with a reason. Pure function of the file's bytes and the
//! options, so two runs decide alike.

use std::path::Path;

use crate::data::decode::{self, CodecError};
use crate::data::shard::{FLAG_DOWNSIZED, FLAG_TRANSCODED};
use crate::prep::transcode;

use super::Options;

/// A file that goes into a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// JPEG bytes to store.
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// `FLAG_*` bits for the index.
    pub flags: u32,
}

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Short key used for counting: `empty`, `unreadable`, `not-an-image`,
    /// `corrupt-header`, `zero-size`, `too-large`, `truncated`,
    /// `decode-failed`, `encode-failed`, `decoder-panic`.
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

impl From<CodecError> for Reject {
    fn from(e: CodecError) -> Reject {
        let reason = match e {
            CodecError::Empty => "empty",
            CodecError::NotAnImage => "not-an-image",
            CodecError::CorruptHeader(_) => "corrupt-header",
            CodecError::ZeroSize { .. } => "zero-size",
            CodecError::TooLarge { .. } => "too-large",
            CodecError::Truncated(_) => "truncated",
            CodecError::Decode(_) => "decode-failed",
            CodecError::Encode(_) => "encode-failed",
        };
        Reject {
            reason,
            detail: e.to_string(),
        }
    }
}

/// Reads `path` and decides. A panic inside a decoder (a bug in a codec
/// meeting hostile bytes) becomes a `decoder-panic` reject, not a crash.
pub fn admit_file(path: &Path, opts: &Options) -> Result<Admitted, Reject> {
    let bytes = std::fs::read(path).map_err(|e| Reject {
        reason: "unreadable",
        detail: e.to_string(),
    })?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| admit_bytes(bytes, opts)))
        .unwrap_or_else(|_| {
            Err(Reject {
                reason: "decoder-panic",
                detail: "the image decoder panicked on this file".into(),
            })
        })
}

/// Decides on bytes already in memory.
///
/// JPEGs are kept byte for byte unless `--max-side` shrinks them; their
/// header and completeness are always checked, and with `--verify` the whole
/// image is decoded. Any other decodable format is re-encoded as JPEG.
pub fn admit_bytes(bytes: Vec<u8>, opts: &Options) -> Result<Admitted, Reject> {
    if bytes.is_empty() {
        return Err(CodecError::Empty.into());
    }
    if decode::is_jpeg(&bytes) {
        let (width, height) = decode::jpeg_dimensions(&bytes, opts.max_pixels)?;
        decode::check_jpeg_complete(&bytes)?;
        if opts.max_side.is_some_and(|m| width.max(height) > m) || opts.verify {
            let img = decode::decode_jpeg(&bytes, opts.max_pixels)?;
            if let Some(small) = shrink(img, opts)? {
                return Ok(small);
            }
        }
        return Ok(Admitted {
            bytes,
            width,
            height,
            flags: 0,
        });
    }
    let img = transcode::decode_any(&bytes, opts.max_pixels)?;
    let (img, flags) = match opts.max_side {
        Some(m) if img.width.max(img.height) > m => (
            transcode::downsize(img, m)?,
            FLAG_TRANSCODED | FLAG_DOWNSIZED,
        ),
        _ => (img, FLAG_TRANSCODED),
    };
    Ok(Admitted {
        bytes: transcode::encode_jpeg(&img, opts.quality)?,
        width: img.width,
        height: img.height,
        flags,
    })
}

/// Downsizes and re-encodes a decoded JPEG when `--max-side` asks for it.
fn shrink(img: decode::RgbImage, opts: &Options) -> Result<Option<Admitted>, Reject> {
    let Some(max_side) = opts.max_side else {
        return Ok(None);
    };
    if img.width.max(img.height) <= max_side {
        return Ok(None);
    }
    let small = transcode::downsize(img, max_side)?;
    Ok(Some(Admitted {
        bytes: transcode::encode_jpeg(&small, opts.quality)?,
        width: small.width,
        height: small.height,
        flags: FLAG_DOWNSIZED,
    }))
}
