# Shared paths for the scripts; sourced, not run.
# Caches live outside the clone so CI and fresh clones reuse builds and models.
export TABTUNE_CACHE="${TABTUNE_CACHE:-$HOME/.cache/tabtune}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TABTUNE_CACHE/target}"
TABTUNE_VENV="$TABTUNE_CACHE/venv"
TABTUNE_MODEL="$TABTUNE_CACHE/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
