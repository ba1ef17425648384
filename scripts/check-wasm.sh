#!/usr/bin/env bash
# Lints the wasm32 builds (the core and the browser façade in src/web/) with
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
# Each variant of wasm-pack.toml with its features and flags (threads: std
# rebuilt with atomics, as scripts/build-web.sh builds it).
wasm_variants | while IFS='|' read -r name _ features flags build_std; do
  dir=$(wasm_target_dir "$name" rustup)
  echo "clippy, wasm32, $name build" >&2
  if [ "$build_std" = yes ]; then
    RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" RUSTC_BOOTSTRAP=1 cargo clippy --lib --no-default-features \
      --features "$features" --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort -- -D warnings
  else
    RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" cargo clippy --lib --no-default-features \
      --features "$features" --target wasm32-unknown-unknown -- -D warnings
  fi
done
