# Shared paths for the scripts; sourced, not run.
# Caches live outside the clone so CI and fresh clones reuse builds and models.
export TABTUNE_CACHE="${TABTUNE_CACHE:-$HOME/.cache/tabtune}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TABTUNE_CACHE/target}"
TABTUNE_VENV="$TABTUNE_CACHE/venv"
TABTUNE_MODEL="$TABTUNE_CACHE/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The second real model, a non-Llama family: Gemma 3 270M (base), Q4_K_M.
TABTUNE_GEMMA="$TABTUNE_CACHE/models/gemma3/gemma-3-270m-q4_k_m.gguf"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The browser build's variants from wasm-pack.toml, one line each:
# name|out-dir|features|RUSTFLAGS (shared + its own)|build-std (yes/no).
wasm_variants() {
  python3 - <<'PY'
import tomllib
t = tomllib.load(open("wasm-pack.toml", "rb"))
for name, v in t["variant"].items():
    flags = (t["build"]["rustflags"] + " " + v.get("rustflags", "")).strip()
    print(name, v["out-dir"], v["features"], flags, "yes" if v.get("build-std") else "no", sep="|")
PY
}

# A variant's cargo target dir (`rustup` or `debian` toolchain): each keeps
# its own, as their RUSTFLAGS and std differ.
wasm_target_dir() {
  local dir="$TABTUNE_CACHE/target-web"
  [ "$2" = debian ] && dir+="-debian"
  [ "$1" != webgpu ] && dir+="-$1"
  echo "$dir"
}
