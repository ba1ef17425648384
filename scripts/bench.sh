#!/usr/bin/env bash
# LoRA training throughput: tabtune vs PyTorch+PEFT on the same model file,
# batch, sequence length, rank and targets, in one run; prints the ratios,
# like against like: activations kept (tabtune --keep-activations, PyTorch
# as is), then each layer recomputed in the backward pass (tabtune's
# default, PyTorch with gradient checkpointing).
# Usage: scripts/bench.sh [--model PATH] [--batch B] [--seq-len T] [--rank R] [--steps N]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
model="$TABTUNE_MODEL"; batch=4; seq=256; rank=8; steps=5
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2;; --batch) batch="$2"; shift 2;; --seq-len) seq="$2"; shift 2;;
    --rank) rank="$2"; shift 2;; --steps) steps="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
bash scripts/fetch-model.sh
bash scripts/setup-python.sh
# The dev profile compiles every dependency (burn, where the math runs) at opt-level 3.
cargo build --bin tabtune
common=(--model "$model" --batch "$batch" --seq-len "$seq" --rank "$rank" --steps "$steps")
torch=$("$TABTUNE_VENV/bin/python" -c 'import torch; print(torch.__version__)')
for mode in kept recomputed; do
  if [ "$mode" = kept ]; then ttflag=(--keep-activations); ptflag=(); else ttflag=(); ptflag=(--checkpointing); fi
  echo "== activations $mode: tabtune (burn flex, $(nproc) cores)"
  tt=$("$CARGO_TARGET_DIR/debug/tabtune" bench "${common[@]}" "${ttflag[@]}" | tee /dev/stderr)
  echo "== activations $mode: PyTorch $torch + PEFT"
  pt=$("$TABTUNE_VENV/bin/python" scripts/bench_peft.py "${common[@]}" "${ptflag[@]}" 2>/dev/null | tee /dev/stderr)
  a=$(echo "$tt" | awk '/tokens\/s/ {print $1}'); b=$(echo "$pt" | awk '/tokens\/s/ {print $1}')
  awk -v a="$a" -v b="$b" -v m="$mode" 'BEGIN { printf "ratio tabtune / PyTorch+PEFT, activations %s: %.2fx throughput\n", m, a / b }'
done
