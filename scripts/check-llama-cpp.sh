#!/usr/bin/env bash
# llama.cpp itself loads the GGUF LoRA `tabtune export --gguf` writes, and runs
# the merged GGUFs of `--merged-gguf` (f16, Q8_0), on the
# default model (Llama) and on Gemma 3 270M, and gives tabtune's losses
# (tests/llama_cpp/check.mjs); on Gemma it also tokenizes as tabtune does.
# llama.cpp comes from node-llama-cpp's prebuilt Linux x64 CPU binary
# (pinned in tests/llama_cpp/package.json; npm keeps its download cached).
set -euo pipefail
source "$(dirname "$0")/env.sh"
# node-llama-cpp's prebuilt binary pinned here is Linux x64's (glibc).
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "llama.cpp check skipped: it runs on Linux x86_64 (node-llama-cpp's pinned CPU build), not $(uname -sm)" >&2
  exit 0
fi
cd "$ROOT/tests/llama_cpp"
[ -d node_modules/node-llama-cpp ] && [ -d node_modules/@node-llama-cpp/linux-x64 ] \
  || npm ci --no-audit --no-fund --omit=optional
cd "$ROOT"
bash scripts/setup-python.sh
cargo build --bin tabtune
# check MODEL DATA [ARGS...]: the model expanded to f32 by the gguf package
# once (cached: 540 MB for the default model, 1.1 GB for Gemma), then the check.
check() {
  local model=$1 data=$2
  shift 2
  local f32="${model%.gguf}.F32.gguf"
  [ -f "$f32" ] || { "$TABTUNE_VENV/bin/python" tests/llama_cpp/f32_copy.py "$model" "$f32.part" && mv "$f32.part" "$f32"; }
  echo "-- $(basename "$model") on $data $*"
  node tests/llama_cpp/check.mjs --bin "$CARGO_TARGET_DIR/debug/tabtune" \
    --model "$model" --f32 "$f32" --data "$data" "$@"
}
# --via-hf: also a merged GGUF written from the model as a Hugging Face directory.
check "$TABTUNE_MODEL" www/samples/chat.jsonl --via-hf --hf-texts tests/fixtures/smollm2/tokenizer_cases.json
# rsLoRA (its scale written as alpha) on some projections only, q and k among them.
check "$TABTUNE_MODEL" www/samples/chat.jsonl --rslora --targets q,k,o,down
check "$TABTUNE_GEMMA" tests/fixtures/data/completion.jsonl --texts tests/fixtures/gemma3/tokenizer_cases.json \
  --quant-tol 2e-2
