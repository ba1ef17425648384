#!/usr/bin/env bash
# The README's test command: sets up what it needs (quick when already there)
# and runs every check. Caches (build, model, Python venv) live in ~/.cache/tabtune.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
step() { printf '\n== %s\n' "$*"; }

step "toolchain"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "real models: the default (SmolLM2-135M) and Gemma 3 270M"
bash scripts/fetch-model.sh smollm2 gemma3

step "format and lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

step "native tests (flex CPU backend)"
cargo test --no-fail-fast

step "PEFT loads a tabtune adapter with the same eval loss (Llama, Qwen2, Qwen3, Gemma 3)"
bash scripts/setup-python.sh
cargo build --bin tabtune
"$TABTUNE_VENV/bin/python" scripts/peft_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
  --model "$TABTUNE_MODEL" --data tests/fixtures/data/chat.jsonl
# Each other family (tiny random models with a character tokenizer), and Gemma 3 270M itself.
for family in qwen2 qwen3 gemma3; do
  "$TABTUNE_VENV/bin/python" scripts/peft_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
    --model "tests/fixtures/tiny_$family" --data tests/fixtures/data/completion.jsonl
done
"$TABTUNE_VENV/bin/python" scripts/peft_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
  --model "$TABTUNE_GEMMA" --data tests/fixtures/data/completion.jsonl

step "the model card stays valid YAML and Python whatever the names hold"
"$TABTUNE_VENV/bin/python" scripts/card_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
  --model tests/fixtures/tiny_qwen2 --data tests/fixtures/data/completion.jsonl

step "the merged model is PEFT's merge, and transformers and gguf-py read it so (SmolLM2, Gemma 3, Qwen2, Qwen3)"
"$TABTUNE_VENV/bin/python" scripts/merged_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
  --model "$TABTUNE_MODEL" --data www/samples/chat.jsonl
"$TABTUNE_VENV/bin/python" scripts/merged_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
  --model "$TABTUNE_GEMMA" --data tests/fixtures/data/completion.jsonl
# Each family from its directory, and from its GGUF (no vocabulary: the
# config.json tabtune writes for it, against the directory in PEFT).
for family in qwen2 qwen3 gemma3; do
  "$TABTUNE_VENV/bin/python" scripts/merged_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
    --model "tests/fixtures/tiny_$family" --data tests/fixtures/data/completion.jsonl
  "$TABTUNE_VENV/bin/python" scripts/merged_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
    --model "tests/fixtures/tiny_$family/tiny_$family.gguf" --adapter "tests/fixtures/tiny_$family/adapter" \
    --reference "tests/fixtures/tiny_$family"
done

step "TRL continues from a tabtune adapter (export --recipe, 2 steps on the CPU)"
"$TABTUNE_VENV/bin/python" scripts/trl_check.py --bin "$CARGO_TARGET_DIR/debug/tabtune" \
  --model "$TABTUNE_MODEL" --data www/samples/chat.jsonl

step "llama.cpp loads a tabtune GGUF LoRA, and runs the merged GGUFs, with the same losses (SmolLM2, Gemma 3)"
bash scripts/check-llama-cpp.sh

step "the browser app: wasm build, wasm32 lints, the page in headless Chromium (WebGPU and CPU)"
bash scripts/test-browser.sh
