#!/usr/bin/env bash
# Builds the browser app into www/: the two wasm modules and their JS glue
# (WebGPU in www/pkg, the threaded CPU build in www/pkg-threads; settings
# from wasm-pack.toml), the vendored front-end packages, and a link to the
# default model. Incremental: a second run with no change takes
# seconds. Picks rustup's wasm32 target when it can, else Debian's rustc-web
# with std built from source (when rustup cannot add the wasm32 target); TABTUNE_WASM_TOOLCHAIN=rustup|debian
# forces one.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
WASM_BINDGEN_VERSION=0.2.130 # must equal the wasm-bindgen crate in Cargo.lock

# wasm-pack.toml: the shared settings (variants: wasm_variants in env.sh).
read -r TARGET PROFILE < <(python3 -c 'import tomllib; b = tomllib.load(open("wasm-pack.toml", "rb"))["build"]; print(b["target"], b["profile"])')

# 1. Front-end packages (uPlot), vendored so the page needs no CDN.
if [ ! -f www/node_modules/uplot/dist/uPlot.esm.js ] || [ www/package.json -nt www/node_modules/.stamp ]; then
  (cd www && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.stamp)
fi
mkdir -p www/vendor
cp -u www/node_modules/uplot/dist/uPlot.esm.js www/node_modules/uplot/dist/uPlot.min.css www/vendor/

# 2. The wasm modules and 3. their JS glue.
choice="${TABTUNE_WASM_TOOLCHAIN:-auto}"
if [ "$choice" != debian ] && { rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown \
     || rustup target add wasm32-unknown-unknown >/dev/null 2>&1; }; then
  toolchain=rustup
else
  [ "$choice" = rustup ] && { echo "rustup has no wasm32 target here" >&2; exit 1; }
  toolchain=debian
  if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library ] || [ ! -e /usr/bin/rust-lld ] || ! command -v lld-22 >/dev/null; then
    echo "installing Debian's rustc-web toolchain for wasm32..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22 >/dev/null
  fi
fi
bindgen="$TABTUNE_CACHE/tools/bin/wasm-bindgen"
if ! "$bindgen" --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once, a few minutes)..." >&2
  cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$TABTUNE_CACHE/tools"
fi

# One variant: cargo build (std from source where the variant or the
# toolchain needs it), then wasm-bindgen into its out-dir.
build_variant() {
  local name=$1 out_dir=$2 features=$3 flags=$4 build_std=$5
  local args=(--lib --no-default-features --features "$features" --target wasm32-unknown-unknown --profile "$PROFILE")
  local target_dir
  target_dir=$(wasm_target_dir "$name" "$toolchain")
  echo "building the $name wasm module with $toolchain's wasm32 target ($PROFILE)" >&2
  if [ "$toolchain" = rustup ] && [ "$build_std" = no ]; then
    RUSTFLAGS="$flags" CARGO_TARGET_DIR="$target_dir" cargo build "${args[@]}"
  elif [ "$toolchain" = rustup ]; then
    rustup component list --installed 2>/dev/null | grep -q '^rust-src' || rustup component add rust-src >&2
    RUSTFLAGS="$flags" CARGO_TARGET_DIR="$target_dir" RUSTC_BOOTSTRAP=1 \
      cargo build "${args[@]}" -Zbuild-std=std,panic_abort
  else
    RUSTFLAGS="$flags" CARGO_TARGET_DIR="$target_dir" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
      /usr/bin/cargo build "${args[@]}" -Zbuild-std=std,panic_abort
  fi
  local wasm="$target_dir/wasm32-unknown-unknown/$PROFILE/tabtune.wasm"
  if [ ! -f "$out_dir/tabtune_bg.wasm" ] || [ "$wasm" -nt "$out_dir/tabtune_bg.wasm" ]; then
    # No name section: 6.6 MiB less to download; panics still reach the page as text.
    "$bindgen" --target "$TARGET" --no-typescript --remove-name-section --out-dir "$out_dir" "$wasm"
  fi
  local size gz
  size=$(stat -c %s "$out_dir/tabtune_bg.wasm")
  gz=$(gzip -9 -c "$out_dir/tabtune_bg.wasm" | wc -c)
  echo "$out_dir/tabtune_bg.wasm is $((size / 1024)) KiB, $((gz / 1024)) KiB gzipped" >&2
}
while IFS='|' read -r -u 3 name out_dir features flags build_std; do
  build_variant "$name" "$out_dir" "$features" "$flags" "$build_std"
done 3< <(wasm_variants)

# 4. The default model, served with the page (not committed).
bash "$ROOT/scripts/fetch-model.sh"
mkdir -p www/models
ln -sfn "$TABTUNE_MODEL" www/models/SmolLM2-135M-Instruct.Q4_1.gguf

echo "www/ is ready" >&2
