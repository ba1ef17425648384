#!/usr/bin/env bash
# llama.cpp itself loads the GGUF LoRA `tabtune export --gguf` writes, on the
# default model, and gives tabtune's losses (tests/llama_cpp/check.mjs).
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
# The default model expanded to f32 by the gguf package, once (540 MB, cached).
f32="${TABTUNE_MODEL%.gguf}.F32.gguf"
[ -f "$f32" ] || { "$TABTUNE_VENV/bin/python" tests/llama_cpp/f32_copy.py "$TABTUNE_MODEL" "$f32.part" && mv "$f32.part" "$f32"; }
cargo build --bin tabtune
node tests/llama_cpp/check.mjs --bin "$CARGO_TARGET_DIR/debug/tabtune" \
  --model "$TABTUNE_MODEL" --f32 "$f32" --data www/samples/chat.jsonl
