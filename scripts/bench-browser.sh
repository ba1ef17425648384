#!/usr/bin/env bash
# The page's training speed and memory beside the native CLI's, in one run on
# this machine: the default model, the sample chat data (loss on the answers
# only), the same batch, length, steps and seed. The page runs in headless
# Chromium on the CPU engine with every core (threads), then with one thread
# (`--variants` picks; add `webgpu` on a machine with a real GPU). Prints
# tokens/s over steps 2..N (step 1 warms up), the engine's peak memory, and
# each ratio to the CLI.
# Then it counts a WebGPU training step's kernel launches at batch 4 x 256 on
# the default model's graph: SwiftShader (this machine's WebGPU) cannot run
# the 135M model in useful time, and the launches depend on the graph (30
# blocks, 7 targets, the tied 49152-token head) and the base's format, not
# on the width, so random models with that graph stand in: f32 at width 72
# (9 heads over 3), and packed as the default model's base is, quantized to
# Q4_0 at load at width 128 (4 heads of 32 over 2), a whole number of
# 32-value blocks, whose q/k/v and gate/up rows join on the GPU as the
# default model's do (tests/browser/make_tiny_model.py OUT 30 [packable]). `--launches 0` skips it.
# Usage: scripts/bench-browser.sh [--batch 4] [--seq-len 128] [--steps 8] [--variants cpu-threads,cpu-1] [--launches 1]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
batch=4; seq=128; steps=8; variants=cpu-threads,cpu-1; launches=1
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) batch="$2"; shift 2;; --seq-len) seq="$2"; shift 2;; --steps) steps="$2"; shift 2;;
    --variants) variants="$2"; shift 2;; --launches) launches="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
bash scripts/build-web.sh
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.stamp)
fi
# The dev profile compiles every dependency (burn, where the math runs) at opt-level 3.
cargo build --bin tabtune

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== the page (headless Chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), $(nproc) cores): batch $batch, length $seq, $steps steps" >&2
node tests/browser/bench.mjs --batch "$batch" --seq-len "$seq" --steps "$steps" --variants "$variants" | tee "$out/page.jsonl" >&2

echo "== tabtune train (native, $(nproc) cores): same data and settings" >&2
python3 - "$CARGO_TARGET_DIR/debug/tabtune" "$TABTUNE_MODEL" "$batch" "$seq" "$steps" "$out" <<'PY'
import json, resource, subprocess, sys
bin, model, batch, seq, steps, out = sys.argv[1:]
log = f"{out}/cli.jsonl"
subprocess.run([bin, "train", "--model", model, "--data", "www/samples/chat.jsonl", "--out", f"{out}/adapter",
                "--batch", batch, "--seq-len", seq, "--steps", steps, "--validation", "0", "--seed", "42",
                "--log", log], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB
rows = [json.loads(l) for l in open(log)]
rows = [r for r in rows if r["kind"] == "step"]
timed = rows[1:]
tokens = sum(r["tokens"] for r in timed)
seconds = (rows[-1]["elapsed_ms"] - rows[0]["elapsed_ms"]) / 1000
cli = {"variant": "cli", "tokens_per_s": tokens / seconds, "timed_steps": len(timed), "tokens": tokens,
       "seconds": seconds, "first_step_s": rows[0]["elapsed_ms"] / 1000, "peak_rss_mib": peak,
       "losses": [r["loss"] for r in rows]}
print(json.dumps(cli), file=sys.stderr)
page = [json.loads(l) for l in open(f"{out}/page.jsonl")]
print()
print(f"{'':14} {'tokens/s':>9} {'x CLI':>6} {'memory MiB':>11}  loss at step {len(rows)}")
for p in page:
    print(f"page {p['variant']:9} {p['tokens_per_s']:9.1f} {p['tokens_per_s'] / cli['tokens_per_s']:6.2f} "
          f"{p['wasm_memory_mib']:11.0f}  {p['losses'][-1]:.6f}   ({p['backend'].strip('()')})")
print(f"{'cli':14} {cli['tokens_per_s']:9.1f} {1:6.2f} {peak:11.0f}  {cli['losses'][-1]:.6f}   (peak RSS)")
for p in page[1:]:
    print(f"page {page[0]['variant']} / page {p['variant']}: {page[0]['tokens_per_s'] / p['tokens_per_s']:.2f}x")
PY

[ "$launches" = 1 ] || exit 0
echo "== WebGPU kernel launches per step: the default model's graph at batch 4 x 256, 2 steps, f32 and packed" >&2
bash scripts/setup-python.sh
"$TABTUNE_VENV/bin/python" tests/browser/make_tiny_model.py "$out" 30 >/dev/null
"$TABTUNE_VENV/bin/python" tests/browser/make_tiny_model.py "$out" 30 packable >/dev/null
node tests/browser/bench.mjs --batch 4 --seq-len 256 --steps 2 --variants webgpu --model "$out/tiny-30" > "$out/launches.json"
# The default model's base is packed (a Q4_1/Q8_0 GGUF): the same graph with
# every width a whole number of blocks, quantized to Q4_0 at load.
node tests/browser/bench.mjs --batch 4 --seq-len 256 --steps 2 --variants webgpu --model "$out/tiny-30-packable" \
  --base-weights q4_0 > "$out/launches-packed.json"
python3 - "$out/launches.json" "$out/launches-packed.json" <<'PY'
import json, sys
for path, what in zip(sys.argv[1:], ["f32 base, width 72", "packed (Q4_0) base, width 128"]):
    d = json.loads(open(path).read().strip().splitlines()[-1])
    print(f"\nWebGPU launches per step (30 blocks, batch 4 x 256, {what}): {d['dispatches_by_step']} by step, "
          f"{d['gpu_copies_per_step']} buffer copies; goal 2000: {d['gpu_dispatches_per_step'] / 2000:.2f}x; "
          f"GPU buffers at their peak {d['gpu_peak_mib']:.0f} MiB")
    print("most launched kernels in the last step:")
    for name, n in d["kernels_last_step"][:12]:
        print(f"  {n:6d}  {name}")
PY
