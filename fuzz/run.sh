#!/usr/bin/env bash
# Runs barlow's fuzz targets with cargo-fuzz (libFuzzer + AddressSanitizer).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 600 s, all three)
#
# Targets: shard_reader (shard header, index and records on arbitrary
# bytes), manifest_journal (the manifest and shardify-journal parsers),
# decode_augment (JPEG decode and both augmented views on arbitrary bytes).
# Each starts from the committed seeds in fuzz/seeds/TARGET and grows its
# corpus in fuzz/corpus/TARGET (not committed). A crash leaves its input in
# fuzz/artifacts/TARGET and makes this script exit non-zero.
#
# Needs `cargo install cargo-fuzz`. The stable toolchain takes the
# sanitizer flags with RUSTC_BOOTSTRAP=1; the first build compiles every
# dependency instrumented (about 15 minutes on 2 cores). Not part of CI:
# that build alone would take half of CI's time budget.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(shard_reader manifest_journal decode_augment)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${seconds}s"
  cargo fuzz run --release "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1
done
