#!/usr/bin/env bash
# The GPU measurements of barlow in one bounded run, for a machine with an
# NVIDIA GPU, 16 cores, PyTorch and no network:
#
#   device      nvidia-smi's description of the GPU
#   check       `barlow gpu-check`: CUDA against the CPU (f32 and bf16 steps,
#               u8 upload, checkpoints, feed path)
#   data        a JPEG dataset generated and shardified on the spot
#   loader      the loader alone on 16 threads, 224 px, images/s
#   train-f32   `barlow train`: ResNet-50 + 8192-8192-8192 projector, 224 px,
#   train-bf16  batch 256, real loader on 16 threads; f32 and bf16 mixed
#               precision: images/s, data wait, peak GPU memory
#   torch-f32   benches/pytorch_step.py, the same step in PyTorch on the same
#   torch-bf16  GPU (channels_last; bf16 autocast), synthetic input
#   cpu-train   the CPU path at ResNet-50 128 px batch 16 on all cores,
#   cpu-torch   barlow against PyTorch
#
# Every part runs under its own time limit (together under 10 minutes: the
# parts' limits add up to 545 s, 565 s with timeout's grace periods) and writes its output under OUT; a failed
# part is recorded and the rest still run. The last part prints a
# summary table (OUT/summary.md) and writes OUT/summary.json.
#
#   benches/gpu-run.sh OUT              on the GPU machine
#   benches/gpu-run.sh OUT --dry-run    rehearsal on any machine: a tiny
#                                       network, a few steps, the CPU backend
#   BACKEND=vulkan BARLOW_ALLOW_SOFTWARE_DEVICE=1 benches/gpu-run.sh OUT --dry-run
#                                       the rehearsal on lavapipe, through
#                                       the GPU code path (autotune included)
#
# BARLOW names the binary (default: target/release/barlow, built with
# `--features cuda` for a real run), SHARDIFY the shardify binary (default:
# beside BARLOW), PYTHON the interpreter with PyTorch (default: python3),
# BACKEND the backend (default: cuda; cpu with --dry-run), WORK a scratch
# folder for the dataset and the runs' checkpoints, several GiB at full size
# (default: a new folder under /tmp). OUT keeps only logs, JSON and the
# summary. To take the binaries to a machine that cannot build them, strip
# and compress them (`strip -o barlow target/release/barlow && gzip -9
# barlow`; about 13 MB for a `--features cuda` build, shardify 2 MB): a
# BARLOW or SHARDIFY ending in .gz is unpacked into WORK first.
#
# The runs start in WORK, where a burn.toml configures CubeCL as the
# repository's does, with empty autotune and kernel caches of its own and a
# log of autotune's choices (OUT/autotune.log). The summary names the
# convolution kernel autotune picked for each shape and fails loudly where
# the direct (scalar) kernel won a 3x3 convolution, or, on a GPU backend,
# where nothing was logged.
set -u

out=${1:?usage: benches/gpu-run.sh OUT [--dry-run]}
dry=0
[ "${2:-}" = "--dry-run" ] && dry=1
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${WORK:-$(mktemp -d /tmp/barlow-gpu-run.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
# binary PATH NAME: PATH made absolute, or unpacked into WORK/NAME when it
# ends in .gz.
binary() {
    case $1 in
        *.gz) gzip -dc "$1" > "$work/$2" && chmod +x "$work/$2" && echo "$work/$2" ;;
        *) realpath "$1" ;;
    esac
}
given=${BARLOW:-$here/../target/release/barlow}
barlow=$(binary "$given" barlow)
case $given in
    *.gz) default_shardify=$(dirname "$given")/shardify.gz ;;
    *) default_shardify=$(dirname "$given")/shardify ;;
esac
shardify=$(binary "${SHARDIFY:-$default_shardify}" shardify)
for b in "$barlow" "$shardify"; do
    [ -x "$b" ] || { echo "gpu-run.sh: $b is not an executable (set BARLOW, SHARDIFY)" >&2; exit 1; }
done
cores=$(nproc)
: > "$out/parts.tsv"
: > "$out/autotune.log"

if [ $dry = 1 ]; then
    backend=${BACKEND:-cpu}
    # The demo's network: the same code path at a size two cores run in
    # seconds.
    net=(--arch resnet18 --width 8 --image-size 32 --projector 256-256)
    torch_net=(--arch resnet18 --width 8 --size 32 --projector 256-256)
    size=32 batch=16 steps=6 per_class=30 side=(--min-side 96 --max-side 160)
    cpu_net=(--arch resnet18 --width 8 --image-size 32 --projector 256-256)
    cpu_torch_net=(--arch resnet18 --width 8 --size 32 --projector 256-256)
    torch_device=cpu
else
    backend=${BACKEND:-cuda}
    net=(--arch resnet50 --image-size 224 --projector 8192-8192-8192)
    torch_net=(--arch resnet50 --size 224 --projector 8192-8192-8192)
    size=224 batch=256 steps=30 per_class=1000 side=(--min-side 256 --max-side 500)
    cpu_net=(--arch resnet50 --image-size 128 --projector 2048-2048-2048)
    cpu_torch_net=(--arch resnet50 --size 128 --projector 2048-2048-2048)
    torch_device=cuda
fi

# part NAME SECONDS CMD...: runs CMD with stdout and stderr in OUT/NAME.log,
# killed after SECONDS; its last line that is a JSON object goes to
# OUT/NAME.json.
part() {
    local name=$1 secs=$2
    shift 2
    local t0=$SECONDS
    echo "== $name (limit ${secs}s): $*"
    timeout --kill-after=2 "$secs" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    grep '^{' "$out/$name.log" | tail -1 > "$out/$name.json"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$out/parts.tsv"
    echo "   exit $rc after $((SECONDS - t0))s"
}

# The largest GPU memory use nvidia-smi saw while CMD ran, in MiB, into
# OUT/NAME.mem (none without nvidia-smi).
with_memory() {
    local name=$1
    shift
    if command -v nvidia-smi > /dev/null && [ $dry = 0 ]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 \
            > "$out/$name.mem" 2>/dev/null &
        local sampler=$!
        "$@"
        kill $sampler 2>/dev/null
        wait $sampler 2>/dev/null
    else
        "$@"
    fi
}

# CubeCL reads the first burn.toml in the working directory or above it;
# "local" caches live in the working directory.
cat > "$work/burn.toml" <<TOML
[cubecl.autotune]
level = "balanced"
cache = "local"

[cubecl.autotune.logger]
file = "$out/autotune.log"

[cubecl.compilation]
cache = "local"

[cubecl.streaming]
max_streams = 1
TOML
cd "$work" || exit 1

if command -v nvidia-smi > /dev/null; then
    part device 10 nvidia-smi -q
fi
if [ "$backend" = cpu ]; then
    part check 110 "$barlow" gpu-check --dry-run --out "$work/check"
else
    part check 110 "$barlow" gpu-check --backend "$backend" --out "$work/check"
fi
cp "$work/check/gpu-check.json" "$out/" 2> /dev/null

# Enough images that the timed steps fit in one epoch (an epoch ends with a
# checkpoint).
part data 40 bash -c "'$barlow' make-sample --out '$work/images' --classes 8 \
    --train-per-class $per_class --val-per-class 1 ${side[*]} --threads $cores \
    && '$shardify' '$work/images/train' '$work/data' --threads $cores"

part loader 25 "$barlow" bench-loader --data "$work/data" --threads "$cores" \
    --batch-size $batch --batches 20 --image-size $size --json

for p in f32 bf16; do
    with_memory "train-$p" part "train-$p" 90 "$barlow" train --data "$work/data" \
        --out "$work/run-$p" --backend $backend --precision $p "${net[@]}" \
        --batch-size $batch --epochs 1 --max-steps $steps --log-every 1 \
        --threads "$cores"
    cp "$work/run-$p/log.jsonl" "$out/run-$p.jsonl" 2> /dev/null
done

if "$python" -c "import torch, torchvision" 2> /dev/null; then
    part torch-f32 45 "$python" "$here/pytorch_step.py" "${torch_net[@]}" \
        --batch $batch --device $torch_device --threads "$cores" --steps 10 --warmup 3
    part torch-bf16 45 "$python" "$here/pytorch_step.py" "${torch_net[@]}" \
        --batch $batch --device $torch_device --threads "$cores" --steps 10 --warmup 3 --bf16
    part cpu-torch 30 "$python" "$here/pytorch_step.py" "${cpu_torch_net[@]}" \
        --batch 16 --device cpu --threads "$cores" --steps 3 --warmup 1
else
    echo "== PyTorch parts skipped: $python cannot import torch and torchvision"
fi
part cpu-train 60 "$barlow" train --data "$work/data" --out "$work/run-cpu" \
    --backend cpu "${cpu_net[@]}" --batch-size 16 --epochs 1 --max-steps 3 \
    --log-every 1 --threads 2 --compute-threads "$((cores > 2 ? cores - 2 : 1))"
cp "$work/run-cpu/log.jsonl" "$out/run-cpu.jsonl" 2> /dev/null

"$python" - "$out" "$batch" "$backend" <<'EOF'
import json, os, statistics, sys

out, batch, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def last_json(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.loads(f.read().strip() or "null")
    except (OSError, ValueError):
        return None

def run(name, run_dir, skip=2):
    """Steady-state images/s and data-wait share of a barlow run: the
    median over its logged steps after the first `skip` (compilation,
    autotuning, warm-up); none if it logged no more."""
    try:
        with open(os.path.join(out, run_dir + ".jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        return None
    steady = lines[skip:]
    if not steady:
        return None
    r = {
        "images_per_sec": statistics.median(l["images_per_sec"] for l in steady),
        "data_wait": statistics.median(l["data_wait"] for l in steady),
        "steps": len(lines),
    }
    try:
        with open(os.path.join(out, name + ".mem")) as f:
            r["peak_gpu_mib"] = max(int(v) for v in f.read().split())
    except (OSError, ValueError):
        pass
    return r

parts = {}
with open(os.path.join(out, "parts.tsv")) as f:
    for line in f:
        name, rc, secs = line.rstrip("\n").split("\t")
        parts[name] = {"exit": int(rc), "seconds": int(secs)}
check = last_json("check")
loader = last_json("loader")
summary = {
    "parts": parts,
    "gpu_check_passed": check.get("passed") if check else None,
    "loader_images_per_sec": loader.get("images_per_sec") if loader else None,
    "barlow_f32": run("train-f32", "run-f32"),
    "barlow_bf16": run("train-bf16", "run-bf16"),
    "torch_f32": last_json("torch-f32"),
    "torch_bf16": last_json("torch-bf16"),
    "cpu_barlow": run("cpu-train", "run-cpu", skip=1),
    "cpu_torch": last_json("cpu-torch"),
}

def ips(x, key="images_per_sec"):
    return x.get(key) if x else None

def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

rows = [
    ("barlow f32", ips(summary["barlow_f32"]), ips(summary["torch_f32"], "median_images_per_sec")),
    ("barlow bf16", ips(summary["barlow_bf16"]), ips(summary["torch_bf16"], "median_images_per_sec")),
    ("barlow CPU", ips(summary["cpu_barlow"]), ips(summary["cpu_torch"], "median_images_per_sec")),
]
lines = ["| step | barlow images/s | PyTorch images/s | ratio | data wait | peak GPU MiB |",
         "|---|---|---|---|---|---|"]
for (label, b, t), key in zip(rows, ["barlow_f32", "barlow_bf16", "cpu_barlow"]):
    r = summary[key] or {}
    lines.append(f"| {label} | {fmt(b)} | {fmt(t)} | {fmt(ratio(b, t), '.2f')} | "
                 f"{fmt(r.get('data_wait'), '.3f')} | {r.get('peak_gpu_mib', '-')} |")
# Autotune's convolution choices: "Fastest result NAME-ConvAutotuneKey {
# kernel_size: [3, 3], ... dtype: F32, ... }" (forward and backward
# convolutions alike).
import re
choices = {}
try:
    with open(os.path.join(out, "autotune.log")) as f:
        for m in re.finditer(r"Fastest result (\w+)-(Conv\w*AutotuneKey) \{ kernel_size: \[([\d, ]+)\].*?dtype: (\w+)", f.read()):
            k = f"{m.group(2)} {m.group(3).replace(', ', 'x')} {m.group(4)}: {m.group(1)}"
            choices[k] = choices.get(k, 0) + 1
except OSError:
    pass
direct_3x3 = [k for k in choices if " 3x3 " in k and k.endswith(": conv_direct")]
# On a GPU backend autotune must have timed the convolutions (empty caches).
unlogged = backend != "cpu" and not choices
summary["conv_choices"] = choices
summary["direct_won_3x3"] = direct_3x3
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
step_need = max((v for v in [ips(summary["barlow_f32"]), ips(summary["barlow_bf16"])] if v), default=None)
lines.append("")
lines.append(f"loader alone: {fmt(summary['loader_images_per_sec'])} images/s, "
             f"{fmt(ratio(summary['loader_images_per_sec'], step_need), '.2f')}x what the fastest step consumes")
tf = summary["torch_f32"]
if tf:
    lines.append(f"PyTorch f32 step: TF32 {tf.get('tf32')}, cuDNN benchmark {tf.get('cudnn_benchmark')}")
lines.append(f"gpu-check passed: {summary['gpu_check_passed']}")
lines.append("autotune's convolution kernels (key: kernel, times chosen): "
             + (", ".join(f"{k} x{n}" for k, n in sorted(choices.items())) or "none logged"))
if direct_3x3:
    lines.append("FAILED: the direct (scalar) convolution won for 3x3: " + "; ".join(direct_3x3))
if unlogged:
    lines.append(f"FAILED: autotune logged no convolution choice on {backend}")
lines.append("parts (exit, seconds): " + ", ".join(f"{k} ({v['exit']}, {v['seconds']})" for k, v in parts.items()))
text = "\n".join(lines)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text + "\n")
print(text)
sys.exit(1 if direct_3x3 or unlogged else 0)
EOF
