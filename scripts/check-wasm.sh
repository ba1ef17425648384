#!/usr/bin/env bash
# Lints the wasm32 build (the core and the browser façade in src/web/) with
# clippy. Runs after scripts/build-web.sh, in the same target dir and with the
# same flags, so only the lint pass is extra. Clippy needs rustup's wasm32
# target; on the Debian rustc-web path (no clippy) the build alone is the check.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
if [ "${TABTUNE_WASM_TOOLCHAIN:-auto}" = debian ] || ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  echo "no rustup wasm32 target: clippy for wasm32 skipped (Debian's rustc-web has no clippy)" >&2
  exit 0
fi
export CARGO_TARGET_DIR="$TABTUNE_CACHE/target-web" RUSTFLAGS="-C target-feature=+simd128"
exec cargo clippy --lib --no-default-features --target wasm32-unknown-unknown -- -D warnings
