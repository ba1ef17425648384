#!/usr/bin/env python3
"""The TRL hand-off starts where tabtune stopped: `tabtune export --recipe` on an adapter trained
by `tabtune train`, then the folder's own `train.py` (TRL's SFTTrainer) run for two steps on the
CPU. Its loss before training must equal `tabtune eval`'s with the adapter (within 1e-3
relative, over the same trained tokens); it must then train the two steps and save an adapter
that tabtune loads.

Usage: trl_check.py --bin PATH_TO_TABTUNE --model MODEL.gguf|DIR --data DATA
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from run_cmd import run


REL_TOL = 1e-3



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    settings = ["--seq-len", "128", "--batch", "2"]
    with tempfile.TemporaryDirectory() as tmp:
        adapter, recipe = Path(tmp) / "adapter", Path(tmp) / "recipe"
        run([a.bin, "train", "--model", a.model, "--data", a.data, "--out", adapter, "--steps", "3",
             "--lr", "2e-3", "--targets", "all", *settings])
        run([a.bin, "export", "--model", a.model, "--adapter", adapter, "--recipe", recipe, "--data", a.data,
             "--steps", "2", *settings])
        ours = json.loads(run([a.bin, "eval", "--model", a.model, "--adapter", adapter, "--data", a.data,
                               "--seq-len", "128"]))
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
        out = run([sys.executable, recipe / "train.py", "--base", a.model, "--cpu", "--max-steps", "2",
                   "--output-dir", Path(tmp) / "out"], env=env, cwd=recipe)
        lines = [json.loads(l) for l in out.splitlines() if l.startswith("{\"")]
        before = next(l for l in lines if "eval_loss_before" in l)
        done = next(l for l in lines if "steps" in l)
        rel = abs(before["eval_loss_before"] - ours["loss"]) / ours["loss"]
        print(f"TRL's loss before training {before['eval_loss_before']:.6f} over {before['tokens']} tokens; "
              f"tabtune eval {ours['loss']:.6f} over {ours['tokens']}; relative difference {rel:.2e} "
              f"(tolerance {REL_TOL:g}); then {done['steps']} TRL steps")
        if rel > REL_TOL or before["tokens"] != ours["tokens"] or done["steps"] != 2:
            sys.exit("TRL check FAILED")
        after = json.loads(run([a.bin, "eval", "--model", a.model, "--adapter", done["adapter"], "--data", a.data,
                                "--seq-len", "128"]))
        print(f"tabtune eval with TRL's adapter: {after['loss']:.6f}")
        if not after["loss"] < ours["loss"] + 1.0:
            sys.exit("TRL check FAILED: the adapter TRL saved does not evaluate")
        print("TRL check passed")


if __name__ == "__main__":
    main()
