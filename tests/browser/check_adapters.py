#!/usr/bin/env python3
"""Checks the adapters the page downloaded (tests/browser/page.test.mjs).

For each run (webgpu.json, webgpu-q4_0.json, cpu.json in OUT) it
1. opens the zip: exactly adapter_model.safetensors, adapter_config.json and
   README.md; PEFT's config fields; every factor's name and shape follows PEFT
   for the model (lora_A [r, in], lora_B [out, r]);
2. trains the same model on the same data with the same settings and seed with
   `tabtune train --out X.zip` and compares:
   - the page's loss at every step with the CLI's, within LOSS_RTOL;
   - every module's update dW = lora_B @ lora_A, relative Frobenius error
     within DW_RTOL each and DW_MEDIAN_RTOL in the median. (Not the raw
     factors: AdamW's first update is lr * g/|g|, so an element whose gradient
     is ~0 can take either sign under float noise; those elements carry ~no
     weight in dW. Measured here: 0.2% of elements flip, median dW error 0.15%.)
   - the card (README.md) names the base model and the final loss;
   - adapter_config.json equals the CLI's byte for byte;
3. loads the CPU run's adapter with PEFT on the default model
   (scripts/peft_check.py --adapter): same eval loss as `tabtune eval`;
4. the CPU run's llama.cpp / Ollama download (adapter.gguf, Modelfile,
   README.md) equals, byte for byte, what `tabtune export --gguf` writes from
   the page's PEFT adapter (scripts/check-llama-cpp.sh shows llama.cpp loads
   such a file and agrees with tabtune's losses);
5. the CPU run's merged downloads against `tabtune export --merged-gguf` /
   `--merged` of the page's PEFT adapter: the Q8_0 GGUF's metadata, tensor
   names, types and shapes equal the CLI's, every tensor byte for byte or,
   where the page's float rounding of B·A differs in the last bit, each
   value within one Q8_0 step of its block; the bf16 zip holds the CLI's
   files, its small files byte for byte, every tensor within one bf16 step;
6. the CPU run's TRL hand-off (`tabtune-trl.zip`) holds the files `tabtune
   export --recipe` writes for the page's adapter with the same data and
   settings, equal byte for byte (`recipe.json` but for the data file's
   path; the adapter's card names the page's run); `scripts/trl_check.py`
   runs such a folder's `train.py`;
7. the WebGPU run reloaded mid-way and resumed (`webgpu-resume.json`): its
   adapter against the uninterrupted run's, every module's update within
   DW_RTOL and DW_MEDIAN_RTOL (the page test holds the losses to 1e-3).

Usage: check_adapters.py --bin TABTUNE --out OUT
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load

# measured: 3.4e-5 (cpu), 4.4e-8 (webgpu), 4.2e-8 (webgpu-q4_0), 6.7e-8 (webgpu-gemma3)
LOSS_RTOL = {"cpu": 2e-4, "webgpu": 1e-3, "webgpu-q4_0": 1e-3, "webgpu-gemma3": 1e-3}
DW_RTOL = 0.1
DW_MEDIAN_RTOL = 0.01
ENTRIES = ["adapter_model.safetensors", "adapter_config.json", "README.md"]
GGUF_ENTRIES = ["adapter.gguf", "Modelfile", "README.md"]
MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def fail(msg):
    sys.exit(f"check_adapters: {msg}")


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} failed:\n{out.stderr}")
    return out.stdout + out.stderr


def read_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if names != ENTRIES:
            fail(f"{path}: entries {names}, expected {ENTRIES}")
        return {n: z.read(n) for n in names}


def dims(model):
    """(layers, {module: (in, out)}) from config.json or the tabtune CLI's model line."""
    if Path(model).is_dir():
        c = json.loads((Path(model) / "config.json").read_text())
        d, hd = c["hidden_size"], c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        q, kv, i = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd, c["intermediate_size"]
        layers = c["num_hidden_layers"]
    else:  # SmolLM2-135M, as its GGUF metadata says
        d, q, kv, i, layers = 576, 576, 192, 1536, 30
    return layers, {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                    "gate_proj": (d, i), "up_proj": (d, i), "down_proj": (i, d)}


def check_layout(name, files, spec, rank=8):
    cfg = json.loads(files["adapter_config.json"])
    s = spec["settings"]
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 16.0,
            "lora_dropout": s["dropout"], "base_model_name_or_path": spec["base"], "bias": "none",
            "inference_mode": True, "use_rslora": False, "use_dora": False}
    for k, v in want.items():
        if cfg.get(k) != v:
            fail(f"{name}: adapter_config.json {k} = {cfg.get(k)!r}, expected {v!r}")
    if sorted(cfg["target_modules"]) != sorted(MODULES):
        fail(f"{name}: target_modules {cfg['target_modules']}")
    tensors = load(files["adapter_model.safetensors"])
    layers, shape = dims(spec["model"])
    expected = {}
    for l in range(layers):
        for m, part in MODULES.items():
            d_in, d_out = shape[m]
            key = f"base_model.model.model.layers.{l}.{part}.{m}"
            expected[f"{key}.lora_A.weight"] = (rank, d_in)
            expected[f"{key}.lora_B.weight"] = (d_out, rank)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        wrong = [k for k in expected if k in got and got[k] != expected[k]][:3]
        fail(f"{name}: tensors differ from PEFT's layout: missing {missing}, extra {extra}, wrong shapes {wrong}")
    return tensors


def compare(name, spec, files, tensors, tabtune, tmp):
    s = spec["settings"]
    cli_zip = Path(tmp) / f"{name}-cli.zip"
    out = run([tabtune, "train", "--model", spec["model"], "--data", spec["data"], "--out", str(cli_zip),
               "--steps", str(s["steps"]), "--batch", str(s["batch"]), "--seq-len", str(s["seq_len"]),
               "--dropout", str(s["dropout"]), "--seed", str(s["seed"]), "--base-model", spec["base"],
               "--validation", str(s.get("validation", 0.1)), "--base-weights", s.get("base_weights", "stored")])
    cli_files = read_zip(cli_zip)
    cli = load(cli_files["adapter_model.safetensors"])
    final = float(re.search(r"final loss ([0-9.]+)", out).group(1))
    page_final = spec["losses"][-1]
    rel = abs(page_final - final) / final
    if rel > LOSS_RTOL[name]:
        fail(f"{name}: final loss {page_final} in the page, {final} from the CLI (relative {rel:.1e})")
    if files["adapter_config.json"] != cli_files["adapter_config.json"]:
        fail(f"{name}: adapter_config.json differs from the CLI's")
    card = files["README.md"].decode()
    if f"base_model: {json.dumps(spec['base'])}" not in card or f"| final loss | {page_final:.4f} |" not in card:
        fail(f"{name}: README.md does not name the base model and final loss:\n{card}")
    errs = []
    for k in tensors:
        if ".lora_A." not in k:
            continue
        b = k.replace(".lora_A.", ".lora_B.")
        dw_page = tensors[b] @ tensors[k]
        dw_cli = cli[b] @ cli[k]
        errs.append(np.linalg.norm(dw_page - dw_cli) / max(np.linalg.norm(dw_cli), 1e-30))
    worst, median = max(errs), float(np.median(errs))
    print(f"{name}: final loss page {page_final:.6f} vs CLI {final:.6f} (relative {rel:.1e}); "
          f"update dW relative error median {median:.2e}, worst {worst:.2e} over {len(errs)} modules")
    if worst > DW_RTOL or median > DW_MEDIAN_RTOL:
        fail(f"{name}: the page's adapter differs from the CLI's (dW error median {median:.2e}, worst {worst:.2e})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        # webgpu-q4_0: the base quantized at load and kept packed on the GPU.
        # webgpu-gemma3: a tiny Gemma 3 (sliding window, attention scale, GeGLU) on WebGPU.
        for name in ["webgpu", "webgpu-q4_0", "webgpu-gemma3", "cpu"]:
            spec = json.loads((Path(a.out) / f"{name}.json").read_text())
            files = read_zip(spec["zip"])
            tensors = check_layout(name, files, spec)
            compare(name, spec, files, tensors, a.bin, tmp)
        spec = json.loads((Path(a.out) / "cpu.json").read_text())
        adapter = Path(tmp) / "cpu-adapter"
        zipfile.ZipFile(spec["zip"]).extractall(adapter)
        out = run([a.python, root / "scripts" / "peft_check.py", "--bin", a.bin, "--model", spec["model"],
                   "--data", spec["data"], "--adapter", adapter])
        print("cpu, in PEFT: " + next(l for l in out.splitlines() if l.startswith("PEFT eval loss")))
        exported = Path(tmp) / "cpu-gguf"
        run([a.bin, "export", "--model", spec["model"], "--adapter", adapter, "--gguf", exported])
        with zipfile.ZipFile(spec["ggufZip"]) as z:
            names = z.namelist()
            if names != GGUF_ENTRIES:
                fail(f"{spec['ggufZip']}: entries {names}, expected {GGUF_ENTRIES}")
            for n in names:
                if z.read(n) != (exported / n).read_bytes():
                    fail(f"cpu: the page's {n} differs from `tabtune export --gguf`'s")
        print(f"cpu, for llama.cpp: {', '.join(GGUF_ENTRIES)} equal the CLI's export byte for byte")
        cli_gguf = Path(tmp) / "cli-merged.Q8_0.gguf"
        run([a.bin, "export", "--model", spec["model"], "--adapter", adapter, "--merged-gguf", cli_gguf,
             "--gguf-type", "q8_0"])
        print("cpu, merged GGUF: " + merged_gguf(spec["mergedGguf"], cli_gguf))
        cli_dir = Path(tmp) / "cli-merged-bf16"
        run([a.bin, "export", "--model", spec["model"], "--adapter", adapter, "--merged", cli_dir, "--dtype", "bf16"])
        print("cpu, merged for transformers: " + merged_zip(spec["mergedZip"], cli_dir))
        print("cpu, for TRL: " + recipe_zip(spec, adapter, a.bin, Path(tmp)))
        print("webgpu, resumed: " + resumed(json.loads((Path(a.out) / "webgpu-resume.json").read_text())))


def resumed(spec):
    """The WebGPU run stopped and resumed against the uninterrupted one."""
    whole = load(read_zip(spec["whole"])["adapter_model.safetensors"])
    again = load(read_zip(spec["resumed"])["adapter_model.safetensors"])
    if sorted(whole) != sorted(again):
        fail("webgpu resumed: other tensors than the uninterrupted run's")
    errs = []
    for k in whole:
        if ".lora_A." not in k:
            continue
        b = k.replace(".lora_A.", ".lora_B.")
        dw = whole[b] @ whole[k]
        errs.append(np.linalg.norm(again[b] @ again[k] - dw) / max(np.linalg.norm(dw), 1e-30))
    worst, median = max(errs), float(np.median(errs))
    if worst > DW_RTOL or median > DW_MEDIAN_RTOL:
        fail(f"webgpu resumed from step {spec['stored']}: dW error median {median:.2e}, worst {worst:.2e}")
    return (f"from step {spec['stored']}: losses within {spec['worstLossRelative']:.1e} relative, "
            f"update dW relative error median {median:.2e}, worst {worst:.2e} over {len(errs)} modules")


def recipe_zip(spec, adapter, tabtune, tmp):
    """The page's TRL hand-off against `tabtune export --recipe` of the page's
    adapter with the same data and settings (see the module docs)."""
    s = spec["settings"]
    cli = tmp / "cli-trl"
    run([tabtune, "export", "--model", spec["model"], "--adapter", adapter, "--recipe", cli, "--data", spec["data"],
         "--base-model", spec["base"], "--steps", str(s["steps"]), "--batch", str(s["batch"]),
         "--seq-len", str(s["seq_len"]), "--seed", str(s["seed"])])
    want = sorted(str(p.relative_to(cli)) for p in cli.rglob("*") if p.is_file())
    with zipfile.ZipFile(spec["trlZip"]) as z:
        names = sorted(z.namelist())
        if names != want:
            fail(f"{spec['trlZip']}: entries {names}, expected {want}")
        # The card names the page's data file and run; everything else is the CLI's.
        for n in names:
            if n == "adapter/README.md":
                continue
            ours, theirs = z.read(n), (cli / n).read_bytes()
            if n == "recipe.json":
                ours, theirs = json.loads(ours), json.loads(theirs)
                ours.pop("data_file"), theirs.pop("data_file")
            if ours != theirs:
                fail(f"for TRL: the page's {n} differs from `tabtune export --recipe`'s")
    return f"{len(names)} files equal `tabtune export --recipe`'s (recipe.json but for the data file's path)"


def merged_gguf(page_file, cli_file):
    """The page's merged Q8_0 GGUF against the CLI's (see the module docs)."""
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    ours, theirs = GGUFReader(page_file), GGUFReader(cli_file)
    meta = lambda r: {k: [bytes(f.parts[i]) for i in f.data] for k, f in r.fields.items()}
    if meta(ours) != meta(theirs):
        fail("the page's merged GGUF has other metadata than the CLI's")
    same = 0
    for a, b in zip(ours.tensors, theirs.tensors, strict=True):
        if (a.name, a.tensor_type, list(a.shape)) != (b.name, b.tensor_type, list(b.shape)):
            fail(f"merged GGUF: the page's {a.name} {a.tensor_type!r} {list(a.shape)} is the CLI's {b.name} {b.tensor_type!r} {list(b.shape)}")
        if np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes():
            same += 1
            continue
        x = dequantize(np.asarray(a.data), a.tensor_type).reshape(-1, 32)
        y = dequantize(np.asarray(b.data), b.tensor_type).reshape(-1, 32)
        step = np.abs(y).max(axis=1, keepdims=True) / 127 if a.tensor_type == GGMLQuantizationType.Q8_0 \
            else np.abs(y) * 2.0 ** -10
        if np.any(np.abs(x - y) > 1.01 * step + 1e-12):
            fail(f"merged GGUF: the page's {a.name} is more than one rounding step from the CLI's")
    return f"metadata and layout equal the CLI's export; {same} of {len(theirs.tensors)} tensors byte for byte, the rest within one Q8_0 step"


def merged_zip(page_zip, cli_dir):
    """The page's merged bf16 zip against the CLI's folder (see the module docs)."""
    import torch
    from safetensors.torch import load as load_torch

    with zipfile.ZipFile(page_zip) as z:
        names = sorted(z.namelist())
        want = sorted(p.name for p in cli_dir.iterdir())
        if names != want:
            fail(f"{page_zip}: entries {names}, expected {want}")
        for n in names:
            if n != "model.safetensors" and z.read(n) != (cli_dir / n).read_bytes():
                fail(f"merged zip: the page's {n} differs from the CLI's")
        ours = load_torch(z.read("model.safetensors"))
    theirs = load_torch((cli_dir / "model.safetensors").read_bytes())
    if sorted(ours) != sorted(theirs):
        fail("merged zip: other tensors than the CLI's")
    same = 0
    for k in theirs:
        a, b = ours[k], theirs[k]
        if a.dtype != torch.bfloat16 or a.shape != b.shape:
            fail(f"merged zip: {k} is {a.dtype} {list(a.shape)}, the CLI's {b.dtype} {list(b.shape)}")
        if torch.equal(a, b):
            same += 1
        elif torch.any((a.float() - b.float()).abs() > b.float().abs() * 2.0 ** -7 + 1e-30):
            fail(f"merged zip: the page's {k} is more than one bf16 step from the CLI's")
    return f"the CLI's files, the small ones byte for byte; {same} of {len(theirs)} tensors equal, the rest within one bf16 step"


if __name__ == "__main__":
    main()
