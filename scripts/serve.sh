#!/usr/bin/env bash
# The README's serve command. The browser page is the next issue; until it
# lands this fetches the default model and says what will be served.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/fetch-model.sh"
cat <<MSG
The browser page is not built yet (it lives in www/ once the browser issue lands).
It will be served at http://127.0.0.1:8080 with the default model:
  $TABTUNE_MODEL
Meanwhile the same engine runs from the command line:
  cargo run -- train --model "$TABTUNE_MODEL" --data tests/fixtures/data/chat.jsonl --out /tmp/adapter --steps 10
MSG
