#!/usr/bin/env bash
# Checks that the core (everything but the CLI) builds for wasm32-unknown-unknown.
# Uses rustup's wasm32 target when it is installed or installable; otherwise
# Debian's rustc-web with the standard library built from source (design.md 4.1).
# TABTUNE_WASM_TOOLCHAIN=rustup|debian forces one path. Clippy runs for
# wasm32 on the rustup path (Debian's rustc-web ships no clippy).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
args=(--lib --no-default-features --target wasm32-unknown-unknown)
choice="${TABTUNE_WASM_TOOLCHAIN:-auto}"
if [ "$choice" != debian ] && { rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown \
     || rustup target add wasm32-unknown-unknown >/dev/null 2>&1; }; then
  echo "wasm32 via rustup's target" >&2
  export CARGO_TARGET_DIR="$TABTUNE_CACHE/target-wasm"
  cargo build "${args[@]}"
  exec cargo clippy "${args[@]}" -- -D warnings
fi
[ "$choice" = rustup ] && { echo "rustup has no wasm32 target here" >&2; exit 1; }
if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library ] || [ ! -e /usr/bin/rust-lld ] || ! command -v lld-22 >/dev/null; then
  echo "installing Debian's rustc-web toolchain for wasm32..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22 >/dev/null
fi
echo "wasm32 via Debian's rustc-web, std built from source" >&2
# A separate target dir: a different compiler would invalidate the other build.
CARGO_TARGET_DIR="$TABTUNE_CACHE/target-wasm-debian" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  /usr/bin/cargo build "${args[@]}" -Zbuild-std=std,panic_abort
