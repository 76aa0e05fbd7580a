//! The loader's per-record path on arbitrary bytes: JPEG decode (pixel
//! limit 4 megapixels) and, when it decodes, both augmented views. Errors
//! are fine; a panic or an out-of-bounds access is a bug.
#![no_main]

use barlow::data::augment::{AugmentConfig, Augmenter, sample_view};
use barlow::data::decode::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(1 << 22);
    let Ok(img) = decoder.decode(data) else {
        return;
    };
    let cfg = AugmentConfig {
        size: 32,
        ..AugmentConfig::default()
    };
    let mut aug = Augmenter::new(cfg.size);
    let mut out = vec![0u8; 3 * 32 * 32];
    for view in 0..2 {
        let p = sample_view(&cfg, 7, 0, data.len() as u64, view, img.width, img.height);
        if aug.render(&img, &p).is_ok() {
            aug.write_u8(&mut out);
        }
    }
});
