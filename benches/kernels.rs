//! Per-stage kernels of the loader on one 224x224 view: the vectorised
//! kernels against their scalar references, plus decode and crop+resize.
//!
//!     cargo bench --bench kernels

use std::hint::black_box;

use barlow::data::augment::{blur, color, crop, output};
use barlow::data::decode::Decoder;
use barlow::data::decode::RgbImage;
use barlow::prep::transcode::encode_jpeg;
use criterion::{Criterion, criterion_group, criterion_main};

const S: usize = 224;

fn source(w: u32, h: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let v = (x * 7 + y * 13) ^ (x * y);
            pixels.extend_from_slice(&[v as u8, (v >> 2) as u8, (x + 2 * y) as u8]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

/// The RGBx layout the augmentation kernels take (4 bytes per pixel).
fn rgbx(img: &RgbImage) -> Vec<u8> {
    img.pixels
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

fn kernels(c: &mut Criterion) {
    let src = rgbx(&source(S as u32, S as u32));
    let mut planes = vec![0f32; 3 * S * S];
    color::to_planes(&src, S, S, false, &mut planes);
    let pixels = color::reference::to_pixels(&src, S, S, false);

    let mut g = c.benchmark_group("view-224");
    g.sample_size(30);
    g.bench_function("u8->f32+flip/vectorised", |b| {
        let mut out = vec![0f32; 3 * S * S];
        b.iter(|| color::to_planes(black_box(&src), S, S, true, &mut out))
    });
    g.bench_function("u8->f32+flip/scalar", |b| {
        b.iter(|| color::reference::to_pixels(black_box(&src), S, S, true))
    });
    type Fast = fn(&mut [f32]);
    type Slow = fn(&mut [[f32; 3]]);
    let ops: [(&str, Fast, Slow); 6] = [
        (
            "brightness",
            |p| color::brightness(p, 1.3),
            |p| color::reference::brightness(p, 1.3),
        ),
        (
            "contrast",
            |p| color::contrast(p, 0.7),
            |p| color::reference::contrast(p, 0.7),
        ),
        (
            "saturation",
            |p| color::saturation(p, 1.1),
            |p| color::reference::saturation(p, 1.1),
        ),
        (
            "hue",
            |p| color::hue(p, 0.05),
            |p| color::reference::hue(p, 0.05),
        ),
        ("grayscale", color::grayscale, color::reference::grayscale),
        ("solarize", color::solarize, color::reference::solarize),
    ];
    for (name, fast, slow) in ops {
        g.bench_function(format!("{name}/vectorised"), |b| {
            let mut p = planes.clone();
            b.iter(|| fast(black_box(&mut p)))
        });
        g.bench_function(format!("{name}/scalar"), |b| {
            let mut p = pixels.clone();
            b.iter(|| slow(black_box(&mut p)))
        });
    }
    g.bench_function("blur-sigma1/vectorised", |b| {
        let mut p = planes.clone();
        let mut scratch = blur::BlurScratch::default();
        b.iter(|| blur::blur(black_box(&mut p), S, S, 1.0, &mut scratch))
    });
    g.bench_function("blur-sigma1/scalar", |b| {
        let mut p = planes.clone();
        b.iter(|| blur::reference(black_box(&mut p), S, S, 1.0))
    });
    g.bench_function("write-u8/vectorised", |b| {
        let mut out = vec![0u8; 3 * S * S];
        b.iter(|| output::write_u8(black_box(&planes), &mut out))
    });
    g.bench_function("write-u8/scalar", |b| {
        b.iter(|| output::reference::write_u8(black_box(&planes)))
    });
    g.bench_function("write-f32/vectorised", |b| {
        let mut out = vec![0f32; 3 * S * S];
        b.iter(|| output::write_f32(black_box(&planes), &mut out))
    });
    g.bench_function("write-f32/scalar", |b| {
        b.iter(|| output::reference::write_f32(black_box(&planes)))
    });
    g.finish();

    let photo = source(500, 375);
    let jpeg = encode_jpeg(&photo, 90).unwrap();
    let mut g = c.benchmark_group("source-500x375");
    g.sample_size(20);
    g.bench_function("decode", |b| {
        let mut d = Decoder::new(u64::MAX);
        b.iter(|| d.decode(black_box(&jpeg)).map(|i| i.width).unwrap())
    });
    g.bench_function("crop+resize-to-224", |b| {
        let mut r = fast_image_resize::Resizer::new();
        let photo = rgbx(&photo);
        let mut dst = vec![0u8; 4 * S * S];
        let rect = crop::CropRect {
            x: 50,
            y: 40,
            width: 300,
            height: 260,
        };
        b.iter(|| {
            crop::resize_crop(
                &mut r,
                black_box(&photo),
                500,
                375,
                rect,
                S as u32,
                crop::Filter::Bicubic,
                &mut dst,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
