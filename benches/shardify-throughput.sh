#!/usr/bin/env bash
# Throughput of `shardify` (no --verify, no --max-side) against `cat` over
# the same files, page cache warm for both (each is run once untimed first).
# Prints one line per measurement; record results in BENCHMARKS.md.
#
#   benches/shardify-throughput.sh [PHOTO_DIR]   (default: bench-data/photos,
#                                                 made by datasets/make-photo-crops.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-bench-data/photos}
[ -d "$src" ] || datasets/make-photo-crops.sh "$src"
cargo build --release --bin shardify >/dev/null 2>&1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
files=$(find "$src" -type f | wc -l)
bytes=$(find "$src" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "input: $files files, $bytes bytes ($src)"
find "$src" -type f -print0 | xargs -0 cat >/dev/null   # warm the cache
t0=$(date +%s.%N)
find "$src" -type f -print0 | xargs -0 cat >/dev/null
t1=$(date +%s.%N)
awk -v f="$files" -v b="$bytes" -v s="$(echo "$t1 - $t0" | bc)" \
  'BEGIN {printf "cat:          %.3fs  %.0f files/s  %.1f MB/s\n", s, f/s, b/1e6/s}'
for threads in 1 2; do
  ./target/release/shardify "$src" "$out/warm" --overwrite --threads "$threads" >/dev/null
  t0=$(date +%s.%N)
  ./target/release/shardify "$src" "$out/run" --overwrite --threads "$threads" >/dev/null
  t1=$(date +%s.%N)
  awk -v f="$files" -v b="$bytes" -v t="$threads" -v s="$(echo "$t1 - $t0" | bc)" \
    'BEGIN {printf "shardify -t%d: %.3fs  %.0f images/s  %.1f MB/s\n", t, s, f/s, b/1e6/s}'
done
t0=$(date +%s.%N)
./target/release/shardify "$src" "$out/verify" --overwrite --verify >/dev/null
t1=$(date +%s.%N)
awk -v f="$files" -v b="$bytes" -v s="$(echo "$t1 - $t0" | bc)" \
  'BEGIN {printf "shardify --verify -t2: %.3fs  %.0f images/s  %.1f MB/s\n", s, f/s, b/1e6/s}'
t0=$(date +%s.%N)
./target/release/shardify --check "$out/run" >/dev/null
t1=$(date +%s.%N)
awk -v f="$files" -v s="$(echo "$t1 - $t0" | bc)" \
  'BEGIN {printf "shardify --check: %.3fs  %.0f records/s\n", s, f/s}'
# Cold cache, where the kernel lets us drop it (root): the case of a real
# first run over a dataset on disk.
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
  t0=$(date +%s.%N)
  find "$src" -type f -print0 | xargs -0 cat >/dev/null
  t1=$(date +%s.%N)
  awk -v f="$files" -v b="$bytes" -v s="$(echo "$t1 - $t0" | bc)" \
    'BEGIN {printf "cold cat:          %.3fs  %.0f files/s  %.1f MB/s\n", s, f/s, b/1e6/s}'
  sync && echo 3 > /proc/sys/vm/drop_caches
  t0=$(date +%s.%N)
  ./target/release/shardify "$src" "$out/cold" --overwrite --threads 2 >/dev/null
  t1=$(date +%s.%N)
  awk -v f="$files" -v b="$bytes" -v s="$(echo "$t1 - $t0" | bc)" \
    'BEGIN {printf "cold shardify -t2: %.3fs  %.0f images/s  %.1f MB/s\n", s, f/s, b/1e6/s}'
fi
