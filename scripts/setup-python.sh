#!/usr/bin/env bash
# The reference stack (PyTorch, transformers, PEFT, gguf, TRL) in a venv in the
# cache: used to make fixtures, to check adapters in PEFT, and by the bench.
set -euo pipefail
source "$(dirname "$0")/env.sh"
REQS="torch==2.15.0 transformers==5.24.0 peft==0.21.2 gguf==0.19.0 trl==1.16.0 accelerate==1.16.0 safetensors numpy"
stamp="$TABTUNE_VENV/.tabtune-reqs"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$REQS" ]; then exit 0; fi
python3 -m venv "$TABTUNE_VENV"
"$TABTUNE_VENV/bin/pip" install --quiet $REQS
echo "$REQS" > "$stamp"
