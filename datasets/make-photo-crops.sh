#!/usr/bin/env bash
# Makes a folder of real-photo JPEGs at ImageNet-like size for benchmarks,
# with no network beyond Debian's package archive: the large photos in
# Debian's desktop-background packages, cut into random crops (long side
# 330-500 px, aspect 3:4 to 4:3, baseline 4:2:0 JPEG at quality 85-95) by
# `barlow make-photo-crops`. Deterministic for a given package set and seed.
#
#   datasets/make-photo-crops.sh [OUT_DIR] [COUNT]     (defaults: bench-data/photos 3000)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-data/photos}
count=${2:-3000}
packages="gnome-backgrounds mate-backgrounds ukui-wallpapers plasma-workspace-wallpapers lomiri-wallpapers-20.04 lomiri-wallpapers-16.04"
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "installing photo packages: $missing" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cargo build --release --bin barlow
./target/release/barlow make-photo-crops \
  --src /usr/share/backgrounds --src /usr/share/wallpapers \
  --out "$out" --count "$count" --seed 0
