"""Makes the torchvision fixtures of tests/interop.rs (run by hand; CI only
reads the committed files). Needs torch, torchvision and safetensors.

    python3 tests/torchvision/make_fixtures.py

Writes, next to this script:
- resnet{18,34,50}.keys: torchvision's state-dict keys (fc aside), one per
  line as `name shape dtype`, in state-dict order;
- r18_w8.safetensors, r50_w4_small.safetensors: narrow torchvision ResNets
  (every width divided by 8 and 16; the second with the small stem: a 3x3
  stride-1 conv1 and no max-pool) with random weights and BatchNorm
  statistics, saved as safetensors with `fc` dropped;
- r18_w8.io.safetensors, r50_w4_small.io.safetensors: an input batch and
  the pooled features torchvision computes from it in eval mode.
"""
import os

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def keys(arch):
    sd = getattr(torchvision.models, arch)().state_dict()
    with open(os.path.join(HERE, f"{arch}.keys"), "w") as f:
        for k, v in sd.items():
            if not k.startswith("fc."):
                f.write(f"{k} {list(v.shape)} {str(v.dtype).removeprefix('torch.')}\n")


def narrow(model, factor, small_stem):
    """The same torchvision network, every channel count divided by factor."""
    for m in list(model.modules()):
        for name, c in list(m.named_children()):
            if isinstance(c, nn.Conv2d):
                cin = 3 if c.in_channels == 3 else c.in_channels // factor
                new = nn.Conv2d(cin, c.out_channels // factor, c.kernel_size,
                                c.stride, c.padding, bias=False)
                setattr(m, name, new)
            elif isinstance(c, nn.BatchNorm2d):
                setattr(m, name, nn.BatchNorm2d(c.num_features // factor))
    if small_stem:
        model.conv1 = nn.Conv2d(3, 64 // factor, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def forward_fixture(name, arch, factor, small_stem, size, seed):
    torch.manual_seed(seed)
    m = narrow(getattr(torchvision.models, arch)(), factor, small_stem)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0.0, 0.1)
                mod.running_mean.normal_(0.0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    m.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        y = m(x)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, os.path.join(HERE, f"{name}.safetensors"))
    save_file({"input": x.contiguous(), "output": y.contiguous()},
              os.path.join(HERE, f"{name}.io.safetensors"))
    print(name, "params", sum(v.numel() for v in sd.values()),
          "output", list(y.shape), "max |y|", y.abs().max().item())


if __name__ == "__main__":
    for a in ["resnet18", "resnet34", "resnet50"]:
        keys(a)
    forward_fixture("r18_w8", "resnet18", 8, False, (40, 56), 1)
    forward_fixture("r50_w4_small", "resnet50", 16, True, (20, 24), 2)
    print("torch", torch.__version__, "torchvision", torchvision.__version__)
