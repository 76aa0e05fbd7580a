#!/usr/bin/env python3
"""Writes the golden fixtures under tests/golden/ (run by hand, not by CI).

    python3 tests/golden/make_golden.py            # from the repository root

It rewrites tests/golden/jpeg/ and tests/golden/augment/ (PNG/JPEG files and
their cases.json) and prints, per JPEG case, the file size and, per
augmentation op that has a float reference, how far the PIL path and the
tensor path are apart (the numbers in tests/golden/README.md).

Needs (the committed files were made with exactly these):
    Python 3.11.7, numpy 2.4.6, Pillow 13.0.0 (its bundled libjpeg-turbo 3.2.0),
    torch 2.15.0, torchvision 0.29.2, scikit-image 0.26.0 (only for the two
    public-domain / CC0 photos it ships: astronaut.png, coffee.png),
    Debian 12 libturbojpeg0 1:2.1.5-2 (via ctypes, only for the YCCK files).

    pip install numpy pillow torch torchvision scikit-image
    apt-get install libturbojpeg0

Everything is deterministic (no random numbers). Other versions of Pillow or
libjpeg-turbo may change the JPEG bytes or the resampled sources slightly;
every reference is computed from the files written beside it, so a
regeneration stays self-consistent. Old *.jpg/*.png/cases.json in the two
folders are deleted first, so renamed cases leave nothing behind.
"""

import ctypes
import ctypes.util
import glob
import io
import json
import math
import os
import sys

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter, ImageOps, features
from torchvision.transforms import InterpolationMode

import skimage

HERE = os.path.dirname(os.path.abspath(__file__))
JPEG_DIR = os.path.join(HERE, "jpeg")
AUG_DIR = os.path.join(HERE, "augment")
SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


# --------------------------------------------------------------------------
# Source photos
# --------------------------------------------------------------------------

def photo(name, box, size):
    """A region `box` (l, t, r, b) of a scikit-image sample photo, resampled
    (Lanczos) to `size` (w, h), as an RGB PIL image."""
    with Image.open(os.path.join(SKIMAGE_DATA, name)) as im:
        im = im.convert("RGB").resize(size, Image.Resampling.LANCZOS, box=box)
    # A fresh image: astronaut.png carries an ICC profile and Pillow would
    # copy it into every PNG derived from it.
    return Image.fromarray(np.asarray(im), "RGB")


def save_png(img, path):
    # No metadata chunks (no ICC profile, dpi, text): the bytes depend only
    # on the pixels (and zlib).
    img = img.copy()
    img.info = {}
    img.save(path, format="PNG", optimize=True)


def write_cases(path, cases):
    """A JSON list, one case object per line (compact but diffable)."""
    with open(path, "w") as f:
        f.write("[\n")
        for i, c in enumerate(cases):
            f.write(" " + json.dumps(c, separators=(", ", ": ")))
            f.write(",\n" if i + 1 < len(cases) else "\n")
        f.write("]\n")


# --------------------------------------------------------------------------
# JPEG structure: read back what was really written
# --------------------------------------------------------------------------

def parse_jpeg(data):
    """Markers of a JPEG file: SOF type and components, Adobe transform,
    restart interval, number of scans and of RSTn markers (and which)."""
    assert data[:2] == b"\xff\xd8", "no SOI"
    info = {"sof": None, "components": [], "adobe_transform": None,
            "restart_interval": 0, "scans": 0, "rst_markers": 0,
            "rst_kinds": set(), "app": []}
    i = 2
    n = len(data)
    while i < n:
        assert data[i] == 0xFF, f"expected a marker at {i}"
        while data[i] == 0xFF:
            i += 1
        m = data[i]
        i += 1
        if m == 0xD9:  # EOI
            break
        seglen = int.from_bytes(data[i:i + 2], "big")
        seg = data[i + 2:i + seglen]
        if 0xE0 <= m <= 0xEF:
            info["app"].append(f"APP{m - 0xE0}")
        if m == 0xEE and seg[:5] == b"Adobe":
            info["adobe_transform"] = seg[11]
        elif m in (0xC0, 0xC1, 0xC2):
            info["sof"] = m
            ncomp = seg[5]
            for c in range(ncomp):
                cid, hv, tq = seg[6 + 3 * c:9 + 3 * c]
                info["components"].append(
                    {"id": cid, "h": hv >> 4, "v": hv & 15, "tq": tq})
        elif m == 0xDD:
            info["restart_interval"] = int.from_bytes(seg[:2], "big")
        i += seglen
        if m == 0xDA:  # SOS: walk the entropy-coded data to the next marker
            info["scans"] += 1
            while i < n:
                if data[i] == 0xFF and data[i + 1] != 0x00:
                    if 0xD0 <= data[i + 1] <= 0xD7:
                        info["rst_markers"] += 1
                        info["rst_kinds"].add(data[i + 1] - 0xD0)
                        i += 2
                        continue
                    if data[i + 1] == 0xFF:  # fill byte
                        i += 1
                        continue
                    break
                i += 1
    info["rst_kinds"] = sorted(info["rst_kinds"])
    return info


def strip_segment(data, marker):
    """`data` without its (first) segment of the given marker (e.g. 0xEE)."""
    i = 2
    while True:
        assert data[i] == 0xFF
        m = data[i + 1]
        seglen = int.from_bytes(data[i + 2:i + 4], "big")
        if m == marker:
            return data[:i] + data[i + 2 + seglen:]
        assert m != 0xDA, "segment not found before SOS"
        i += 2 + seglen


# --------------------------------------------------------------------------
# CMYK helpers
# --------------------------------------------------------------------------

def rgb_to_cmyk_ink(img, gcr=0.6):
    """RGB -> CMYK ink amounts (0 = no ink) with partial grey-component
    replacement (K = gcr * (1 - max(r, g, b))), so K and all of C, M, Y vary.
    It inverts Pillow's own CMYK->RGB (r = (255-c)(255-k)/255) up to
    rounding."""
    a = np.asarray(img, dtype=np.float64) / 255.0
    k = gcr * (1.0 - a.max(axis=2))
    denom = np.where(k < 1.0, 1.0 - k, 1.0)
    cmy = (1.0 - a - k[..., None]) / denom[..., None]
    cmyk = np.concatenate([cmy, k[..., None]], axis=2)
    return np.clip(np.rint(cmyk * 255.0), 0, 255).astype(np.uint8)


TJPF_CMYK = 11
TJSAMP = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def turbojpeg_compress_cmyk(cmyk_stored, quality, subsamp):
    """tjCompress2 on a packed CMYK buffer: libjpeg-turbo writes it as YCCK
    (Adobe APP14 transform=2). The bytes are stored as given, so pass the
    Adobe (inverted) values to get a file Photoshop/Pillow read right."""
    path = ctypes.util.find_library("turbojpeg")
    if not path:
        raise RuntimeError("libturbojpeg not found (apt-get install libturbojpeg0)")
    tj = ctypes.CDLL(path)
    tj.tjInitCompress.restype = ctypes.c_void_p
    tj.tjCompress2.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
        ctypes.POINTER(ctypes.c_ulong), ctypes.c_int, ctypes.c_int, ctypes.c_int]
    tj.tjFree.argtypes = [ctypes.c_void_p]
    tj.tjDestroy.argtypes = [ctypes.c_void_p]
    h, w, _ = cmyk_stored.shape
    src = np.ascontiguousarray(cmyk_stored)
    handle = tj.tjInitCompress()
    buf = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    rc = tj.tjCompress2(handle, src.ctypes.data_as(ctypes.c_void_p), w, w * 4, h,
                        TJPF_CMYK, ctypes.byref(buf), ctypes.byref(size),
                        TJSAMP[subsamp], quality, 0)
    if rc != 0:
        raise RuntimeError("tjCompress2 failed")
    out = ctypes.string_at(buf, size.value)
    tj.tjFree(buf)
    tj.tjDestroy(handle)
    return out


# --------------------------------------------------------------------------
# 1. JPEG decode fixtures
# --------------------------------------------------------------------------

def pillow_jpeg(img, **opts):
    b = io.BytesIO()
    img.save(b, format="JPEG", **opts)
    return b.getvalue()


def fresh_dir(path):
    os.makedirs(path, exist_ok=True)
    for pattern in ("*.jpg", "*.png", "cases.json"):
        for f in glob.glob(os.path.join(path, pattern)):
            os.remove(f)


def make_jpeg():
    fresh_dir(JPEG_DIR)
    # Espresso cup, saucer and wood grain: reds/browns, highlights, edges.
    cup = photo("coffee.png", (60, 0, 540, 400), (48, 40))
    # Flag, orange suit, mission patch: saturated reds/blues/oranges.
    astro = photo("astronaut.png", (0, 150, 360, 407), (56, 40))
    cup_rst = photo("coffee.png", (100, 20, 520, 320), (56, 40))
    astro_odd = photo("astronaut.png", (0, 230, 370, 460), (37, 23))
    cup_odd = photo("coffee.png", (70, 10, 520, 300), (45, 29))
    cup_odd2 = photo("coffee.png", (40, 0, 600, 380), (53, 35))
    astro_gray = photo("astronaut.png", (100, 0, 400, 228), (50, 38))
    astro_cmyk = photo("astronaut.png", (0, 180, 330, 510), (48, 48))
    astro_cmyk2 = photo("astronaut.png", (0, 200, 400, 500), (48, 36))

    cases = []

    def add(name, kind, data, colorspace, notes, ref=None, reference="pillow"):
        jpath = os.path.join(JPEG_DIR, name + ".jpg")
        with open(jpath, "wb") as f:
            f.write(data)
        info = parse_jpeg(data)
        with Image.open(jpath) as im:
            w, h = im.size
            rgb = im.convert("RGB") if ref is None else ref
        assert rgb.size == (w, h) and rgb.mode == "RGB"
        save_png(rgb, os.path.join(JPEG_DIR, name + ".png"))
        sampling = "x".join(f"{c['h']}{c['v']}" for c in info["components"])
        case = {
            "file": name + ".jpg",
            "reference": name + ".png",
            "kind": kind,
            "width": w,
            "height": h,
            "colorspace": colorspace,
            "adobe_transform": info["adobe_transform"],
            "sof": {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}[info["sof"]],
            "components": [dict(id=c["id"], h=c["h"], v=c["v"]) for c in info["components"]],
            "restart_interval": info["restart_interval"],
            "rst_markers": info["rst_markers"],
            "scans": info["scans"],
            "app_segments": info["app"],
            "reference_decode": reference,
            "notes": notes,
        }
        cases.append(case)
        print(f"  {name + '.jpg':28s} {len(data):5d} B  {w}x{h}  {colorspace:5s} "
              f"{case['sof']:11s} sampling {sampling:11s} adobe={info['adobe_transform']} "
              f"dri={info['restart_interval']} rst={info['rst_markers']} scans={info['scans']}")
        return info

    print("JPEG cases:")
    add("baseline_420", "baseline 4:2:0",
        pillow_jpeg(cup, quality=85, subsampling=2), "YCbCr",
        "Pillow, quality 85, 4:2:0 (Y 2x2, Cb/Cr 1x1).")
    add("baseline_444", "baseline 4:4:4",
        pillow_jpeg(cup, quality=85, subsampling=0), "YCbCr",
        "Pillow, quality 85, no chroma subsampling.")
    add("baseline_422", "baseline 4:2:2",
        pillow_jpeg(astro, quality=80, subsampling=1), "YCbCr",
        "Pillow, quality 80, 4:2:2 (Y 2x1, 16x8 MCUs): 56 px is a multiple of 8 "
        "but not of 16, so the last MCU column is partial.")
    add("progressive_420", "progressive 4:2:0",
        pillow_jpeg(cup, quality=85, subsampling=2, progressive=True), "YCbCr",
        "Pillow progressive (libjpeg-turbo's default scan script: spectral "
        "selection + successive approximation). Same image, quality and "
        "tables as baseline_420, so the same coefficients: the reference PNG "
        "is identical to baseline_420.png.")
    add("gray", "grayscale",
        pillow_jpeg(astro_gray.convert("L"), quality=85), "Gray",
        "One component; 50x38 is not a multiple of 8 either way.")

    # CMYK, Adobe APP14 transform=0, stored inverted (255 - ink), the way
    # Photoshop, Pillow and ImageMagick write it.
    ink = rgb_to_cmyk_ink(astro_cmyk2)
    info = add("cmyk_adobe", "CMYK (Adobe, inverted)",
               pillow_jpeg(Image.fromarray(ink, "CMYK"), quality=90), "CMYK",
               "Pillow CMYK save: Adobe APP14 transform=0, samples stored inverted "
               "(255 - ink). C, M, Y and K all vary (60% grey-component replacement). "
               "Reference = Pillow decode (reads CMYK;I) + Pillow CMYK->RGB "
               "r = (255-c)(255-k)/255.")
    assert info["adobe_transform"] == 0

    # CMYK without an Adobe marker: the samples are plain ink (0 = none).
    # Pillow stores 255 - value, so hand it 255 - ink, then cut the APP14.
    data = pillow_jpeg(Image.fromarray(255 - ink, "CMYK"), quality=90)
    data = strip_segment(data, 0xEE)
    with Image.open(io.BytesIO(data)) as im:
        # Pillow reads every CMYK JPEG with Adobe polarity (inverted), marker
        # or not, as libjpeg-based tools do; barlow follows it.
        ref = im.convert("RGB")
    info = add("cmyk_plain", "CMYK (no Adobe marker)", data, "CMYK",
               "Same picture as cmyk_adobe but with the APP14 segment removed and "
               "samples stored as plain ink (0 = no ink). Reference = Pillow's own "
               "Image.open().convert('RGB'), which assumes Adobe polarity for every "
               "CMYK JPEG: the negative of the picture, as every Pillow-based "
               "pipeline sees it.",
               ref=ref)
    assert info["adobe_transform"] is None

    # YCCK: libjpeg-turbo's TurboJPEG API turns a CMYK buffer into YCCK.
    ink2 = rgb_to_cmyk_ink(astro_cmyk)
    for sub, name in (("4:4:4", "ycck_444"), ("4:2:0", "ycck_420")):
        data = turbojpeg_compress_cmyk(255 - ink2, 90, sub)
        info = add(name, f"YCCK {sub} (Adobe transform=2)", data, "YCCK",
                   f"TurboJPEG tjCompress2(TJPF_CMYK, TJSAMP {sub}) from Adobe-polarity "
                   "(inverted) CMYK samples; decodes YCCK -> inverted CMYK -> "
                   "Pillow CMYK->RGB." + (" Y and K at 2x2, Cb/Cr at 1x1." if sub == "4:2:0" else ""))
        assert info["adobe_transform"] == 2

    info = add("restart_blocks1", "baseline 4:2:0, restart every MCU",
               pillow_jpeg(cup_rst, quality=85, subsampling=2, restart_marker_blocks=1),
               "YCbCr",
               "56x40, DRI = 1 MCU: 4x3 = 12 MCUs (last column partial), 11 RST "
               "markers, so RST0..RST7 wrap to RST0..RST2.")
    assert info["rst_markers"] >= 9 and info["rst_kinds"] == list(range(8))
    info = add("restart_rows_odd", "baseline 4:4:4 odd size, restart every MCU row",
               pillow_jpeg(cup_odd, quality=85, subsampling=0, restart_marker_rows=1),
               "YCbCr",
               "45x29, 8x8 MCUs: 6 per row (last partial), 4 rows (last partial); "
               "DRI = 6 (one MCU row).")
    assert info["rst_markers"] > 0
    info = add("restart_progressive", "progressive 4:2:0 with restart markers",
               pillow_jpeg(cup_odd2, quality=85, subsampling=2, progressive=True,
                           restart_marker_blocks=3),
               "YCbCr",
               "53x35 progressive with DRI = 3: restart intervals inside DC scans "
               "(3 MCUs) and AC scans (3 blocks of one component).")
    assert info["rst_markers"] > 0

    add("odd_420", "baseline 4:2:0 odd size",
        pillow_jpeg(astro_odd, quality=85, subsampling=2), "YCbCr",
        "37x23: neither a multiple of 8 nor 16; partial MCUs on the right and bottom, "
        "chroma 19x12.")
    add("odd_progressive_422", "progressive 4:2:2 odd size",
        pillow_jpeg(cup_odd, quality=85, subsampling=1, progressive=True), "YCbCr",
        "45x29 progressive 4:2:2 (16x8 MCUs).")

    for c in cases:
        assert c["width"] <= 80 and c["height"] <= 80
    write_cases(os.path.join(JPEG_DIR, "cases.json"), cases)
    return cases


# --------------------------------------------------------------------------
# 2. Augmentation fixtures
# --------------------------------------------------------------------------

def to_tensor(img):
    return F.to_tensor(img)  # float32 CHW in [0, 1]


def tensor_to_pil(t):
    a = torch.round(t.clamp(0, 1) * 255.0).to(torch.uint8)
    return Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB")


def blur_kernel_size(sigma):
    return 2 * math.ceil(3 * sigma) + 1


def diff(a, b):
    x = np.asarray(a, dtype=np.int16)
    y = np.asarray(b, dtype=np.int16)
    d = np.abs(x - y)
    return int(d.max()), float(d.mean())


JITTER = {
    "brightness": ("brightness_factor", F.adjust_brightness),
    "contrast": ("contrast_factor", F.adjust_contrast),
    "saturation": ("saturation_factor", F.adjust_saturation),
    "hue": ("hue_factor", F.adjust_hue),
}


def view(img, p):
    """The reference (facebookresearch/barlowtwins) pipeline on a PIL image,
    with every random choice fixed by `p`."""
    c = p["crop"]
    img = F.resized_crop(img, c["top"], c["left"], c["height"], c["width"],
                         [c["size"], c["size"]], InterpolationMode.BICUBIC)
    if p["hflip"]:
        img = F.hflip(img)
    for name in p["jitter_order"]:
        key, fn = JITTER[name]
        img = fn(img, p[key])
    if p["grayscale"]:
        img = F.rgb_to_grayscale(img, num_output_channels=3)
    if p["blur_sigma"] is not None:
        img = img.filter(ImageFilter.GaussianBlur(radius=p["blur_sigma"]))
    if p["solarize"]:
        img = ImageOps.solarize(img, threshold=128)
    return img


def make_augment():
    fresh_dir(AUG_DIR)
    srcs = {
        # Flag stripes, orange suit, blue mission patch, skin, white.
        "src_astronaut.png": photo("astronaut.png", (0, 160, 352, 512), (40, 40)),
        # Red cup and saucer, crema, steel spoon, wood (hue only: a second
        # hue distribution, kept small).
        "src_coffee.png": photo("coffee.png", (90, 0, 490, 400), (28, 28)),
        # Whole cup scene, 4:3, for the resized crops and whole views.
        "src_wide.png": photo("coffee.png", (33, 0, 567, 400), (64, 48)),
    }
    for name, img in srcs.items():
        save_png(img, os.path.join(AUG_DIR, name))

    cases = []
    diffs = {}

    def out(name, img, op, source, params, path="pil", impl=None):
        fname = name + ".png"
        save_png(img, os.path.join(AUG_DIR, fname))
        case = {"name": name, "op": op, "path": path, "source": source,
                "output": fname, "params": params}
        if impl:
            case["impl"] = impl
        cases.append(case)

    A, C, W = "src_astronaut.png", "src_coffee.png", "src_wide.png"

    # resized_crop (PIL bicubic: a = -0.5, support widened when shrinking).
    crops = [
        ("resized_crop_shrink", W, dict(top=4, left=6, height=40, width=52, size=32)),
        ("resized_crop_enlarge", W, dict(top=14, left=21, height=15, width=15, size=40)),
        ("resized_crop_nonsquare", W, dict(top=2, left=0, height=44, width=27, size=32)),
        ("resized_crop_full", A, dict(top=0, left=0, height=40, width=40, size=28)),
    ]
    for name, s, c in crops:
        img = F.resized_crop(srcs[s], c["top"], c["left"], c["height"], c["width"],
                             [c["size"], c["size"]], InterpolationMode.BICUBIC)
        out(name, img, "resized_crop", s, dict(c, interpolation="bicubic"),
            impl="F.resized_crop(pil, top, left, height, width, [size, size], "
                 "InterpolationMode.BICUBIC)")
        # Measured only (not stored): the tensor path, bicubic a=-0.75, antialias.
        t = F.resized_crop(to_tensor(srcs[s]), c["top"], c["left"], c["height"], c["width"],
                           [c["size"], c["size"]], InterpolationMode.BICUBIC, antialias=True)
        diffs[name] = diff(img, tensor_to_pil(t))

    out("hflip", F.hflip(srcs[A]), "hflip", A, {}, impl="F.hflip(pil)")

    for op, factors in (("brightness", [0.6, 1.4]), ("contrast", [0.6, 1.4]),
                        ("saturation", [0.0, 0.8, 1.2])):
        key, fn = JITTER[op]
        for fct in factors:
            name = f"{op}_{fct}"
            img = fn(srcs[A], fct)
            out(name, img, "adjust_" + op, A, {key: fct},
                impl=f"F.adjust_{op}(pil, {fct})")
            diffs[name] = diff(img, tensor_to_pil(fn(to_tensor(srcs[A]), fct)))
    for src, tag in ((A, "astronaut"), (C, "coffee")):
        for h in [-0.1, -0.05, 0.05, 0.1]:
            name = f"hue_{h}_{tag}"
            img = F.adjust_hue(srcs[src], h)
            shift = int(np.int32(h * 255).astype(np.uint8))
            out(name, img, "adjust_hue", src, {"hue_factor": h},
                impl=f"F.adjust_hue(pil, {h}): PIL RGB->HSV (8-bit H, S, V), "
                     f"H += uint8(int32(hue_factor * 255)) = {shift} mod 256, HSV->RGB")
            timg = tensor_to_pil(F.adjust_hue(to_tensor(srcs[src]), h))
            out(name + "_tensor", timg, "adjust_hue", src, {"hue_factor": h},
                path="tensor",
                impl=f"round(F.adjust_hue(F.to_tensor(pil), {h}) * 255)")
            diffs[name] = diff(img, timg)

    out("grayscale", F.rgb_to_grayscale(srcs[A], num_output_channels=3),
        "rgb_to_grayscale", A, {"num_output_channels": 3},
        impl="F.rgb_to_grayscale(pil, num_output_channels=3) (PIL convert('L'): "
             "(19595 R + 38470 G + 7471 B + 0x8000) >> 16)")
    gt = F.rgb_to_grayscale(to_tensor(srcs[A]), num_output_channels=3)
    diffs["grayscale"] = diff(F.rgb_to_grayscale(srcs[A], 3), tensor_to_pil(gt))

    for sigma in [0.5, 1.0, 2.0]:
        name = f"blur_{sigma}"
        img = srcs[A].filter(ImageFilter.GaussianBlur(radius=sigma))
        out(name, img, "gaussian_blur", A, {"sigma": sigma},
            impl=f"pil.filter(ImageFilter.GaussianBlur(radius={sigma})) "
                 "(PIL: extended box blur, 3 passes, edges clamped)")
        k = blur_kernel_size(sigma)
        timg = tensor_to_pil(F.gaussian_blur(to_tensor(srcs[A]), [k, k], [sigma, sigma]))
        out(name + "_tensor", timg, "gaussian_blur", A,
            {"sigma": sigma, "kernel_size": k}, path="tensor",
            impl=f"round(F.gaussian_blur(F.to_tensor(pil), [{k}, {k}], [{sigma}, {sigma}]) "
                 "* 255) (sampled Gaussian, reflect padding)")
        diffs[name] = diff(img, timg)
        r = k // 2  # pixels whose kernel does not reach past the border
        inner = (r, r, img.width - r, img.height - r)
        diffs[name + " (interior)"] = diff(img.crop(inner), timg.crop(inner))

    out("solarize", ImageOps.solarize(srcs[A], threshold=128), "solarize", A,
        {"threshold": 128},
        impl="ImageOps.solarize(pil, threshold=128): v >= 128 -> 255 - v")

    views = [
        ("view_1", W, dict(
            crop=dict(top=3, left=8, height=39, width=47, size=40, interpolation="bicubic"),
            hflip=True,
            jitter_order=["contrast", "hue", "brightness", "saturation"],
            brightness_factor=1.3, contrast_factor=0.7, saturation_factor=1.25,
            hue_factor=-0.08,
            grayscale=False, blur_sigma=1.3, solarize=False)),
        ("view_2", W, dict(
            crop=dict(top=12, left=27, height=27, width=22, size=40, interpolation="bicubic"),
            hflip=False,
            jitter_order=["saturation", "brightness", "hue", "contrast"],
            brightness_factor=0.75, contrast_factor=1.35, saturation_factor=0.6,
            hue_factor=0.07,
            grayscale=True, blur_sigma=0.4, solarize=True)),
        ("view_3", W, dict(
            crop=dict(top=0, left=0, height=48, width=64, size=40, interpolation="bicubic"),
            hflip=True,
            jitter_order=["hue", "saturation", "contrast", "brightness"],
            brightness_factor=1.1, contrast_factor=1.2, saturation_factor=1.4,
            hue_factor=0.1,
            grayscale=False, blur_sigma=None, solarize=True)),
    ]
    for name, s, p in views:
        p = dict(p, solarize_threshold=128)
        out(name, view(srcs[s], p), "view", s, p,
            impl="resized_crop -> hflip? -> 4 jitter ops in jitter_order -> "
                 "grayscale? -> GaussianBlur(blur_sigma) unless null -> solarize?")

    write_cases(os.path.join(AUG_DIR, "cases.json"), cases)
    return cases, diffs


def main():
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, Pillow {PIL.__version__} "
          f"(libjpeg-turbo {features.version('libjpeg_turbo')}), torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, scikit-image {skimage.__version__}")
    make_jpeg()
    cases, diffs = make_augment()
    print(f"augment: {len(cases)} cases")
    print("PIL path vs tensor path (uint8 units): max / mean |diff|")
    for name, (mx, mean) in diffs.items():
        print(f"  {name:28s} {mx:4d}  {mean:7.3f}")
    total = 0
    for root, _, files in os.walk(HERE):
        for fn in files:
            if "__pycache__" not in root:
                total += os.path.getsize(os.path.join(root, fn))
    print(f"tests/golden total: {total} bytes")


if __name__ == "__main__":
    main()
