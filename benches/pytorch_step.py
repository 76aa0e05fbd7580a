#!/usr/bin/env python3
"""The Barlow Twins training step in PyTorch, for comparison with
`barlow train` on the same CPU cores (or GPU) and sizes.

One step as the reference writes it: both views through a torchvision
ResNet (fc = Identity) and the projector (Linear-BN-ReLU ..., Linear), the
Barlow Twins loss (per-view BatchNorm without affine, cross-correlation,
lambda 0.0051), backward, and an SGD-with-momentum update (LARS costs the
same order: a few element-wise passes over the weights). Input is
synthetic (random normalised views), so this times the network alone.
Prints the images/s (one image = its two views) of each timed step and,
last, a JSON line.

    python3 benches/pytorch_step.py --arch resnet50 --size 128 --batch 16 --projector 2048-2048-2048 --threads 2
    python3 benches/pytorch_step.py --arch resnet18 --width 8 --size 32 --batch 64 --projector 256-256 --threads 2
"""
import argparse
import json
import time

import torch
import torchvision
from torch import nn


def narrow(model, factor):
    """The torchvision network with every channel count divided by factor."""
    for m in list(model.modules()):
        for name, c in list(m.named_children()):
            if isinstance(c, nn.Conv2d):
                cin = 3 if c.in_channels == 3 else c.in_channels // factor
                setattr(m, name, nn.Conv2d(cin, c.out_channels // factor, c.kernel_size,
                                           c.stride, c.padding, bias=False))
            elif isinstance(c, nn.BatchNorm2d):
                setattr(m, name, nn.BatchNorm2d(c.num_features // factor))
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--projector", default="2048-2048-2048")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="autocast to bf16 (GPU)")
    p.add_argument("--no-tf32", action="store_true",
                   help="f32 convolutions and matmuls in full f32 on the GPU (default: TF32, as "
                        "PyTorch runs convolutions by default and as burn's f32 kernels do)")
    a = p.parse_args()
    if a.device != "cpu":
        # PyTorch's own defaults made explicit, and recorded: TF32 for
        # convolutions (and here matmuls too), and cuDNN's kernel search,
        # the counterpart of burn's autotune (the warm-up steps pay for it).
        torch.backends.cudnn.allow_tf32 = not a.no_tf32
        torch.backends.cuda.matmul.allow_tf32 = not a.no_tf32
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    backbone = getattr(torchvision.models, a.arch)()
    if a.width != 64:
        narrow(backbone, 64 // a.width)
    feat = backbone.fc.in_features * a.width // 64
    backbone.fc = nn.Identity()
    dims = [feat] + [int(d) for d in a.projector.split("-")]
    layers = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    model = nn.Sequential(backbone, *layers).to(a.device)
    bn = nn.BatchNorm1d(dims[-1], affine=False).to(a.device)
    if a.device != "cpu":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y1 = torch.randn(a.batch, 3, a.size, a.size, device=a.device)
    y2 = torch.randn(a.batch, 3, a.size, a.size, device=a.device)
    if a.device != "cpu":
        y1 = y1.to(memory_format=torch.channels_last)
        y2 = y2.to(memory_format=torch.channels_last)

    def step():
        with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16):
            z1, z2 = model(y1), model(y2)
        c = bn(z1.float()).T @ bn(z2.float()) / a.batch
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        loss = on + 0.0051 * off
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    rates = []
    for _ in range(a.steps):
        if a.device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = step()
        loss.item()
        rates.append(a.batch / (time.perf_counter() - t))
        print(f"{rates[-1]:.3f} images/s")
    rates.sort()
    print(json.dumps({"arch": a.arch, "width": a.width, "size": a.size, "batch": a.batch,
                      "threads": a.threads, "device": a.device, "bf16": a.bf16,
                      "tf32": a.device != "cpu" and not a.no_tf32,
                      "cudnn_benchmark": a.device != "cpu",
                      "median_images_per_sec": rates[len(rates) // 2],
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
