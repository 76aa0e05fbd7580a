#!/usr/bin/env bash
# The loader on a dataset larger than the memory it may use: `barlow
# bench-loader` for each sampler order (random, blocked, sequential) and
# read path (auto, the default, then map, map-advised, pread), once with
# the data in the page cache and no limit, once in a memory cgroup a third
# or less of the dataset's size with the dataset's pages dropped first
# (--evict). Needs root (the
# cgroup) and Debian's package archive (the photos).
#
#   benches/out-of-memory.sh [LIMIT_MIB] [COUNT]     (defaults: 160 9000)
#
# Writes one JSON line per run to benches/results/out-of-memory-DATE-HHMMSS.jsonl:
# bench-loader's report (its `read`: the path it used) plus `order`,
# `read_flag` (what --read said), `where` (memory | limited), `limit_bytes`
# and the cgroup's `peak_bytes`. ORDERS and READS in the environment narrow
# the runs (e.g. READS=auto).
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mib=${1:-160}
count=${2:-9000}
photos=bench-data/photos-$count
shards=bench-data/photo-shards-$count
out=benches/results/out-of-memory-$(date +%F-%H%M%S).jsonl

cargo build --release --bin barlow --bin shardify
if [ ! -f "$shards/manifest.json" ]; then
  [ -d "$photos" ] || datasets/make-photo-crops.sh "$photos" "$count"
  ./target/release/shardify "$photos" "$shards"
fi
bytes=$(du -sb "$shards" | cut -f1)
limit=$((limit_mib << 20))
echo "dataset $shards: $bytes bytes; limit $limit bytes ($((bytes / limit))x)" >&2

# A child of this shell's memory cgroup (v1 or v2).
if grep -q ':memory:' /proc/self/cgroup; then
  parent=/sys/fs/cgroup/memory$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)
  limit_file=memory.limit_in_bytes peak_file=memory.max_usage_in_bytes
  swap_file=memory.memsw.limit_in_bytes
else
  parent=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
  limit_file=memory.max peak_file=memory.peak swap_file=memory.swap.max
fi
cg=$parent/barlow-bench-$$
trap 'rmdir "$cg" 2>/dev/null || true' EXIT

bench() {
  ./target/release/barlow bench-loader --data "$shards" --threads 2 --batch-size 32 \
    --batches 60 --warmup 3 --image-size 224 --json "$@" | tail -n 1
}

: > "$out"
for order in ${ORDERS:-random blocked sequential}; do
  for read in ${READS:-auto map map-advised pread}; do
    # In memory: the whole dataset in the page cache, no limit.
    cat "$shards"/*.bshard > /dev/null
    line=$(bench --order "$order" --read "$read")
    echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(order='$order', read_flag='$read', where='memory'); print(json.dumps(d))" >> "$out"
    # Limited: a fresh cgroup (its peak starts at 0), the data on disk.
    rmdir "$cg" 2>/dev/null || true
    mkdir "$cg"
    echo "$limit" > "$cg/$limit_file"
    [ -e "$cg/$swap_file" ] && echo "$limit" > "$cg/$swap_file"
    line=$(sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$cg" \
      ./target/release/barlow bench-loader --data "$shards" --threads 2 --batch-size 32 \
      --batches 60 --warmup 3 --image-size 224 --json --evict --order "$order" --read "$read" \
      | tail -n 1)
    peak=$(cat "$cg/$peak_file")
    echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(order='$order', read_flag='$read', where='limited', limit_bytes=$limit, peak_bytes=$peak); print(json.dumps(d))" >> "$out"
    tail -n 2 "$out" | python3 -c "
import json, sys
for l in sys.stdin:
    d = json.loads(l)
    print(f\"{d['order']:<10} {d['read_flag']:<11} -> {d['read']:<11} {d['where']:<8} {d['images_per_sec']:8.1f} images/s  \"
          f\"{d['major_faults']:>8} major faults  {d['read_bytes'] / 2**20:9.1f} MiB read  \"
          f\"peak {d.get('peak_bytes', 0) / 2**20:6.1f} MiB\")
" >&2
  done
done
echo "wrote $out" >&2
