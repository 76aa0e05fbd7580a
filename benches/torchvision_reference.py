#!/usr/bin/env python3
"""The reference PyTorch input pipeline, for comparison with `barlow bench-loader`.

The two Barlow Twins views exactly as facebookresearch/barlowtwins builds them
(torchvision transforms on PIL images: RandomResizedCrop 224 bicubic, flip,
ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, PIL GaussianBlur with
sigma U(0.1, 2) p 1.0 / 0.1, solarize p 0.0 / 0.2, ToTensor, Normalize), read
from the same JPEG files through a DataLoader with N worker processes.
Prints images/s (one image = one source image, two views) and, last, a JSON
line.

    pip install torch torchvision pillow
    python3 benches/torchvision_reference.py bench-data/photos --workers 2
"""
import argparse
import json
import os
import random
import time

import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader, Dataset


class GaussianBlur:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            sigma = random.random() * 1.9 + 0.1
            return img.filter(ImageFilter.GaussianBlur(sigma))
        return img


class Solarization:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return ImageOps.solarize(img)
        return img


def view(blur_p, solarize_p):
    return T.Compose([
        T.RandomResizedCrop(224, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        GaussianBlur(p=blur_p),
        Solarization(p=solarize_p),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


class TwoViews(Dataset):
    def __init__(self, root):
        self.files = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
            if f.lower().endswith((".jpg", ".jpeg"))
        )
        self.t1, self.t2 = view(1.0, 0.0), view(0.1, 0.2)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i]).convert("RGB")
        return self.t1(img), self.t2(img)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = TwoViews(a.root)
    dl = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                    drop_last=True, persistent_workers=a.workers > 0)
    it = iter(dl)
    for _ in range(a.warmup):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(a.batches):
        try:
            v1, _ = next(it)
        except StopIteration:
            it = iter(dl)
            v1, _ = next(it)
        n += v1.shape[0]
    secs = time.perf_counter() - t0
    print(f"torchvision reference: {n / secs:.1f} images/s ({n} images in {secs:.2f}s, "
          f"{a.workers} workers, batch {a.batch_size}, torch {torch.__version__})")
    print(json.dumps({"images_per_sec": n / secs, "mode": "torchvision", "threads": a.workers,
                      "batch_size": a.batch_size}))


if __name__ == "__main__":
    main()
