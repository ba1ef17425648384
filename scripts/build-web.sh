#!/usr/bin/env bash
# Builds the browser app into www/: the wasm module and its JS glue
# (settings from wasm-pack.toml), the vendored front-end packages, and a
# link to the default model. Incremental: a second run with no change takes
# seconds. Picks rustup's wasm32 target when it can, else Debian's rustc-web
# with std built from source (when rustup cannot add the wasm32 target); TABTUNE_WASM_TOOLCHAIN=rustup|debian
# forces one.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
WASM_BINDGEN_VERSION=0.2.130 # must equal the wasm-bindgen crate in Cargo.lock

read -r TARGET OUT_DIR PROFILE < <(python3 - <<'PY'
import tomllib
b = tomllib.load(open("wasm-pack.toml", "rb"))["build"]
print(b["target"], b["out-dir"], b["profile"])
PY
)

# 1. Front-end packages (uPlot), vendored so the page needs no CDN.
if [ ! -f www/node_modules/uplot/dist/uPlot.esm.js ] || [ www/package.json -nt www/node_modules/.stamp ]; then
  (cd www && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.stamp)
fi
mkdir -p www/vendor
cp -u www/node_modules/uplot/dist/uPlot.esm.js www/node_modules/uplot/dist/uPlot.min.css www/vendor/

# 2. The wasm module.
args=(--lib --no-default-features --target wasm32-unknown-unknown --profile "$PROFILE")
export RUSTFLAGS="-C target-feature=+simd128"
choice="${TABTUNE_WASM_TOOLCHAIN:-auto}"
if [ "$choice" != debian ] && { rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown \
     || rustup target add wasm32-unknown-unknown >/dev/null 2>&1; }; then
  echo "building wasm with rustup's wasm32 target ($PROFILE)" >&2
  export CARGO_TARGET_DIR="$TABTUNE_CACHE/target-web"
  cargo build "${args[@]}"
else
  [ "$choice" = rustup ] && { echo "rustup has no wasm32 target here" >&2; exit 1; }
  if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library ] || [ ! -e /usr/bin/rust-lld ] || ! command -v lld-22 >/dev/null; then
    echo "installing Debian's rustc-web toolchain for wasm32..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22 >/dev/null
  fi
  echo "building wasm with Debian's rustc-web, std from source ($PROFILE)" >&2
  export CARGO_TARGET_DIR="$TABTUNE_CACHE/target-web-debian"
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build "${args[@]}" -Zbuild-std=std,panic_abort
fi
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/$PROFILE/tabtune.wasm"

# 3. The JS glue, by the wasm-bindgen CLI of the crate's exact version.
bindgen="$TABTUNE_CACHE/tools/bin/wasm-bindgen"
if ! "$bindgen" --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once, a few minutes)..." >&2
  cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$TABTUNE_CACHE/tools"
fi
if [ ! -f "$OUT_DIR/tabtune_bg.wasm" ] || [ "$wasm" -nt "$OUT_DIR/tabtune_bg.wasm" ]; then
  # No name section: 6.6 MiB less to download; panics still reach the page as text.
  "$bindgen" --target "$TARGET" --no-typescript --remove-name-section --out-dir "$OUT_DIR" "$wasm"
fi

# 4. The default model, served with the page (not committed).
bash "$ROOT/scripts/fetch-model.sh"
mkdir -p www/models
ln -sfn "$TABTUNE_MODEL" www/models/SmolLM2-135M-Instruct.Q4_1.gguf

size=$(stat -c %s "$OUT_DIR/tabtune_bg.wasm")
gz=$(gzip -9 -c "$OUT_DIR/tabtune_bg.wasm" | wc -c)
echo "www/ is ready: $OUT_DIR/tabtune_bg.wasm is $((size / 1024)) KiB, $((gz / 1024)) KiB gzipped" >&2
