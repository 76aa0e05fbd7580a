"""The README's round trip, run by hand: a barlow export loads into
torchvision with strict=True and gives the features `barlow embed` gives.

    python3 tests/torchvision/roundtrip.py BACKBONE.safetensors ARCH IMAGE [BARLOW]

ARCH is resnet18, resnet34 or resnet50 (width 64, the ImageNet stem). Prints
the cosine similarity of torchvision's features (Resize(256),
CenterCrop(224), ToTensor, Normalize) and `barlow embed --weights BACKBONE
--image IMAGE` (224 px); exits 1 below 0.999. Needs torch, torchvision,
safetensors and Pillow.
"""
import json
import subprocess
import sys

import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms

path, arch, image = sys.argv[1:4]
barlow = sys.argv[4] if len(sys.argv) > 4 else "target/release/barlow"

# The README's lines.
m = getattr(torchvision.models, arch)()
m.fc = torch.nn.Identity()
m.load_state_dict(load_file(path), strict=True)
m.eval()

tf = transforms.Compose([
    transforms.Resize(256),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
with torch.no_grad():
    theirs = m(tf(Image.open(image).convert("RGB")).unsqueeze(0))[0]

out = subprocess.run([barlow, "embed", "--weights", path, "--image", image,
                      "--image-size", "224"], check=True, capture_output=True, text=True)
ours = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
cos = torch.nn.functional.cosine_similarity(theirs, ours, dim=0).item()
rel = ((theirs - ours).norm() / theirs.norm()).item()
print(f"{arch}: {theirs.numel()} features, cosine similarity {cos:.6f}, relative L2 difference {rel:.4f}")
sys.exit(0 if cos > 0.999 else 1)
