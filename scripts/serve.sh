#!/usr/bin/env bash
# The README's serve command: builds the browser app (wasm, JS glue, vendored
# packages, default model) and serves www/ on http://127.0.0.1:8080.
# PORT=... picks another port.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/build-web.sh"
exec python3 "$ROOT/scripts/serve.py" --port "${PORT:-8080}" --dir "$ROOT/www"
