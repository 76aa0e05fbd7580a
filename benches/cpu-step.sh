#!/usr/bin/env bash
# The CPU training step side by side: barlow with its own convolution and
# BatchNorm kernels, barlow with burn's ops (what it ran before them), and
# PyTorch (benches/pytorch_step.py), on the same cores in one run, for the
# networks BENCHMARKS.md reports ("CPU training speed"). Each line of the
# output file is one measurement's JSON (median images/s over the timed
# steps; one image = its two views).
#
#     benches/cpu-step.sh [OUT.jsonl]      # needs python3 with torch, torchvision
#
# ResNet-50 at 224 px is not run with burn's ops (minutes a step).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benches/results/cpu-step-$(date +%F).jsonl}
mkdir -p "$(dirname "$out")"
: > "$out"
cargo bench -q --bench step --no-run

run() { # name threads ops|pytorch steps warmup args...
    local name=$1 threads=$2 who=$3 steps=$4 warmup=$5
    shift 5
    local line
    if [[ $who == pytorch ]]; then
        line=$(python3 benches/pytorch_step.py "$@" --threads "$threads" --steps "$steps" --warmup "$warmup" | tail -1)
    else
        line=$(cargo bench -q --bench step -- "$@" --threads "$threads" --steps "$steps" --warmup "$warmup" --ops "$who" | tail -1)
    fi
    echo "{\"network\":\"$name\",\"who\":\"$who\",\"result\":$line}" | tee -a "$out"
}

demo=(--arch resnet18 --width 8 --size 32 --batch 64 --projector 256-256)
r50=(--arch resnet50 --size 128 --batch 16 --projector 2048-2048-2048)
r50_224=(--arch resnet50 --size 224 --batch 32 --projector 2048-2048-2048)
for threads in 1 2; do
    for who in barlow burn pytorch; do
        run demo "$threads" "$who" 30 3 "${demo[@]}"
    done
    for who in barlow burn pytorch; do
        run resnet50-128 "$threads" "$who" 3 1 "${r50[@]}"
    done
    for who in barlow pytorch; do
        run resnet50-224 "$threads" "$who" 3 1 "${r50_224[@]}"
    done
done
