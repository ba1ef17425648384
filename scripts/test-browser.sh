#!/usr/bin/env bash
# The browser suite: builds the app, then drives it in Debian's headless
# Chromium with playwright-core (tests/browser/page.test.mjs): once on WebGPU
# (SwiftShader) with a tiny model from a stand-in hub, once on the CPU path
# with the default model. Then checks the downloaded adapters against
# `tabtune train` and loads one in PEFT (tests/browser/check_adapters.py).
# TABTUNE_SCREENSHOT=FILE saves a screenshot of the page mid-training.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash scripts/build-web.sh
bash scripts/check-wasm.sh
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package.json -nt tests/browser/node_modules/.stamp ]; then
  (cd tests/browser && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.stamp)
fi
bash scripts/setup-python.sh
cargo build --bin tabtune

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$TABTUNE_VENV/bin/python" tests/browser/make_tiny_model.py "$out/tiny" >/dev/null
"$TABTUNE_VENV/bin/python" tests/browser/make_tiny_model.py "$out/tiny" gemma3 >/dev/null
# The 1B-class model (random Q4_0 weights, 697 MB), made once and kept in the cache.
big="$TABTUNE_CACHE/models/random-llama-1b-q4_0.gguf"
if [ ! -s "$big" ] || [ tests/browser/make_1b_model.py -nt "$big" ]; then
  "$TABTUNE_VENV/bin/python" tests/browser/make_1b_model.py "$TABTUNE_MODEL" "$big.part" && mv "$big.part" "$big"
fi
bash scripts/fetch-model.sh gemma3  # the Gemma page test's model
TABTUNE_BROWSER_OUT="$out" TABTUNE_TINY="$out/tiny" TABTUNE_1B="$big" TABTUNE_GEMMA="$TABTUNE_GEMMA" TABTUNE_SERVE_QUIET=1 TABTUNE_BIN="$CARGO_TARGET_DIR/debug/tabtune" \
  node --test --test-reporter=spec tests/browser/ || {
    echo "browser console logs:" >&2; tail -n 40 "$out"/*-console.log >&2 || true; exit 1; }
"$TABTUNE_VENV/bin/python" tests/browser/check_adapters.py --bin "$CARGO_TARGET_DIR/debug/tabtune" --out "$out"
