#!/usr/bin/env bash
# LoRA training on a GPU: tabtune on burn's native wgpu backend (Vulkan,
# WGSL kernels as in the browser's WebGPU) beside PyTorch CUDA + PEFT, same
# model, batch, sequence length, rank and targets, f32 on both (TF32 off),
# in one run. Prints each side's tokens/s and GPU memory, the ratio, and
# each side's share of the GPU's f32 peak: model FLOPs per step (counted by
# scripts/bench_peft.py from the model's shapes) over seconds per step, over
# the f32 matrix-product rate PyTorch reaches on this GPU (8192^3, measured
# here in the same run). Both sides take --warmup untimed steps first (3:
# tabtune's shaders compile and autotune then).
#
# Usage: scripts/bench-gpu.sh [--tabtune BIN] [--python PY] [--model PATH]
#          [--shape smollm2-135m|smollm2-360m|llama-1b] [--batch B]
#          [--seq-len T] [--rank R] [--steps N] [--warmup N]
#          [--modes "kept recomputed"] [--torch-device cuda|cpu]
#
# --tabtune: a tabtune built with `--features gpu` (default: build one here
#   with cargo; ~30 minutes the first time on 2 cores). The GPU machine needs only that binary, a Vulkan driver
#   (libvulkan1 and the vendor's ICD), and Python with torch, transformers
#   and peft.
# --model: a .gguf file or a Hugging Face directory. Default: random
#   weights in the shapes of --shape (scripts/make_bench_model.py), written
#   to $TMPDIR, since a GPU machine may have no way to download the real one;
#   speed and memory depend on the shapes only.
# --torch-device cpu: for trying the script on a machine without CUDA
#   (with a CPU Vulkan such as Mesa's lavapipe the numbers mean nothing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
tabtune=""; python=""; model=""; shape=smollm2-135m
batch=4; seq=256; rank=8; steps=10; warmup=3; modes="kept recomputed"; tdev=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --tabtune) tabtune="$2"; shift 2;; --python) python="$2"; shift 2;;
    --model) model="$2"; shift 2;; --shape) shape="$2"; shift 2;;
    --batch) batch="$2"; shift 2;; --seq-len) seq="$2"; shift 2;;
    --rank) rank="$2"; shift 2;; --steps) steps="$2"; shift 2;; --warmup) warmup="$2"; shift 2;;
    --modes) modes="$2"; shift 2;; --torch-device) tdev="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
for mode in $modes; do
  case "$mode" in kept|recomputed) ;; *) echo "--modes: \`$mode\` is not kept or recomputed" >&2; exit 2;; esac
done
if [ -z "$tabtune" ]; then
  # The dev profile builds burn, wgpu and cubecl at opt-level 3, as scripts/bench.sh.
  cargo build --features gpu --bin tabtune
  tabtune="$CARGO_TARGET_DIR/debug/tabtune"
fi
if [ -z "$python" ]; then
  if [ -x "$TABTUNE_VENV/bin/python" ]; then python="$TABTUNE_VENV/bin/python"; else python=python3; fi
fi
if [ -n "$model" ]; then
  echo "model: $model (--shape not used)"
else
  model="${TMPDIR:-/tmp}/tabtune-bench-$shape"
  echo "model: random weights in $shape's shapes, $model"
  "$python" scripts/make_bench_model.py "$model" --shape "$shape" >/dev/null
fi

echo "== the GPU's f32 matrix-product rate (PyTorch, 8192^3, TF32 off)"
peak=$("$python" - "$tdev" <<'EOF'
import sys, time, torch
dev = sys.argv[1]
torch.backends.cuda.matmul.allow_tf32 = False
n = 8192 if dev == "cuda" else 1024
a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
for _ in range(3):
    a @ b
sync()
t = time.perf_counter()
for _ in range(10):
    a @ b
sync()
print(f"{2 * n**3 * 10 / (time.perf_counter() - t):.4e}")
EOF
)
awk -v p="$peak" 'BEGIN { printf "%.1f TFLOP/s\n", p / 1e12 }'

common=(--model "$model" --batch "$batch" --seq-len "$seq" --rank "$rank" --steps "$steps" --warmup "$warmup")
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Runs one side, its stdout shown and returned; its stderr shown only when it fails.
side() {
  if ! "$@" 2>"$log" | tee /dev/stderr; then
    echo "failed: $*" >&2; tail -n 30 "$log" >&2; return 1
  fi
}
# The number before `tokens/s`, or a message and failure.
rate() { echo "$1" | awk '/ tokens\/s$/ { print $1; found = 1 } END { if (!found) exit 1 }' || { echo "no tokens/s from $2" >&2; return 1; }; }
flops=""
for mode in $modes; do
  if [ "$mode" = kept ]; then ttflag=(--keep-activations); ptflag=(); else ttflag=(); ptflag=(--checkpointing); fi
  echo "== activations $mode: tabtune --device gpu (burn wgpu)"
  tt=$(side "$tabtune" --device gpu bench "${common[@]}" "${ttflag[@]}")
  echo "== activations $mode: PyTorch + PEFT on $tdev"
  pt=$(side "$python" scripts/bench_peft.py "${common[@]}" "${ptflag[@]}" --device "$tdev")
  a=$(rate "$tt" tabtune); b=$(rate "$pt" PyTorch)
  flops=$(echo "$pt" | awk '/^model FLOPs per step/ { print $5 }')
  # Model FLOPs per token x tokens/s over the measured peak.
  awk -v a="$a" -v b="$b" -v f="$flops" -v n="$((batch * seq))" -v p="$peak" -v m="$mode" 'BEGIN {
    printf "ratio tabtune / PyTorch+PEFT, activations %s: %.2fx throughput\n", m, a / b
    printf "share of the f32 peak (model FLOPs), activations %s: tabtune %.1f%%, PyTorch %.1f%%\n", m, 100 * f / n * a / p, 100 * f / n * b / p
  }'
done
