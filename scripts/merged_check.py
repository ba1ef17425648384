#!/usr/bin/env python3
"""The merged model `tabtune export --merged / --merged-gguf` writes is the one PEFT
makes, and transformers and gguf-py read it as such.

Steps: train an adapter with the tabtune CLI (or take --adapter), then export
the merged model as a Hugging Face directory in f32 and bf16 and, for a GGUF
base, as GGUF in f32, f16 and Q8_0. Then:

1. Weights: PEFT's `merge_and_unload()` of the base + adapter (the base read
   by transformers) against the f32 directory's `model.safetensors`, tensor by
   tensor: the same names and shapes, values within WEIGHT_TOL of the largest
   weight (measured: the default model 1.5e-8, Gemma 3 270M 1.2e-8; float
   rounding of B·A).
2. Logits: transformers loads the f32 directory (its config.json and
   tokenizer as written) and gives PEFT's logits (base + adapter, unmerged) on
   the data's first examples within LOGIT_TOL of the largest logit.
3. Tokenizer: transformers' tokenizer from the directory gives the base's
   ids (as transformers tokenizes the base) for every example's text, and
   renders each conversation to the ids tabtune trained on (`tabtune eval
   --dump-tokens`): the chat template written is the one tabtune used.
4. bf16: the directory's tensors are PyTorch's `.to(torch.bfloat16)` of the
   f32 directory's, exactly.
5. GGUF (a GGUF base): each merged file's metadata is the base's except the
   keys the export sets; every tensor of the f16 and Q8_0 files equals, byte
   for byte, numpy's float16 and gguf-py's `quants.quantize` of the f32 file's
   tensor (1-D tensors stay f32); and transformers reads the f32 file to the
   logits of PEFT on its own reading of the base GGUF within LOGIT_TOL (this
   checks the names and q/k row order through an independent reader).

With --reference DIR (a GGUF without a vocabulary, e.g. the tiny families'
GGUFs, and the Hugging Face directory of the same weights), --adapter is
required and there is no data: the logits are on the ids 1..16, the reference
is PEFT on DIR's model, and step 3 is skipped. This checks the config.json
tabtune writes for a GGUF base of each family.

Usage: merged_check.py --bin TABTUNE --model MODEL.gguf|MODEL_DIR --data DATA.jsonl [--adapter DIR]
       merged_check.py --bin TABTUNE --model MODEL.gguf --adapter DIR --reference HF_DIR
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF and weight-loading bars

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import quantize
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from run_cmd import run

WEIGHT_TOL = 1e-6
LOGIT_TOL = 1e-4
EXAMPLES = 4
TEMPLATE = "tokenizer.chat_template"
SET_BY_EXPORT = {"general.file_type", "general.name", "general.quantization_version", "general.alignment"}



def logits(model, examples):
    with torch.no_grad():
        return [model(input_ids=torch.tensor([e["ids"]])).logits.float()[0] for e in examples]


def worst(a, b):
    """Largest |a - b| over lists of tensors, and the largest |a|."""
    return max(float((x - y).abs().max()) for x, y in zip(a, b)), max(float(x.abs().max()) for x in a)


def gguf_meta(reader):
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name.startswith("quantize."):
            continue
        meta[name] = [bytes(field.parts[i]) for i in field.data]
    return meta


def check_tokenizer(check, tmp, where, gguf, data, examples):
    """Step 3: the directory's tokenizer against the base's, and its chat
    template against the ids tabtune trained on."""
    tok = AutoTokenizer.from_pretrained(tmp / "hf-f32")
    base_tok = AutoTokenizer.from_pretrained(*where, **gguf)
    records = [json.loads(l) for l in Path(data).read_text().splitlines() if l.strip()]
    bad = 0
    for rec, ex in zip(records, examples):
        if "messages" in rec:
            ids = tok(tok.apply_chat_template(rec["messages"], tokenize=False), add_special_tokens=False).input_ids
            bad += ids != ex["ids"]
            text = "\n".join(m["content"] for m in rec["messages"])
        else:
            text = rec["prompt"] + rec["completion"] if "prompt" in rec else rec["text"]
        bad += tok(text).input_ids != base_tok(text).input_ids
    check(bad == 0, f"tokenizer: the directory's tokenizes {len(examples)} examples as the base's does in transformers"
          + (", and renders conversations to the ids tabtune trained on" if "messages" in records[0] else "")
          + ("" if bad == 0 else f" ({bad} differ)"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data")
    ap.add_argument("--reference", help="the HF directory of a vocabulary-less GGUF's weights")
    ap.add_argument("--steps", default="3")
    ap.add_argument("--adapter", help="an existing adapter directory; skips training")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = Path(args.model)
    is_gguf = model.is_file()
    if args.reference and not args.adapter or not args.reference and not args.data:
        sys.exit("give --data, or --reference with --adapter")
    failed = []

    def check(ok, line):
        print(("  ok   " if ok else "  FAIL ") + line)
        if not ok:
            failed.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapter = Path(args.adapter) if args.adapter else tmp / "adapter"
        if not args.adapter:
            run([args.bin, "train", "--model", str(model), "--data", args.data, "--out", str(adapter),
                 "--steps", args.steps, "--batch", "2", "--seq-len", "128", "--lr", "5e-3", "--rank", "8",
                 "--seed", "7"])
        base_args = [args.bin, "export", "--model", str(model), "--adapter", str(adapter)]
        for dtype in ["f32", "bf16"]:
            print(run(base_args + ["--merged", str(tmp / f"hf-{dtype}"), "--dtype", dtype], both=True).strip())
        if is_gguf:
            for ty in ["f32", "f16", "q8_0"]:
                print(run(base_args + ["--merged-gguf", str(tmp / f"merged-{ty}.gguf"), "--gguf-type", ty], both=True).strip())
        if args.reference:
            examples = [{"ids": list(range(1, 17))}]
            where, gguf = (Path(args.reference),), {}
        else:
            dump = tmp / "tokens.json"
            run([args.bin, "eval", "--model", str(model), "--adapter", str(adapter), "--data", args.data,
                 "--seq-len", "128", "--dump-tokens", str(dump)])
            examples = json.loads(dump.read_text())["examples"]
            where = (model,) if model.is_dir() else (model.parent,)
            gguf = {} if model.is_dir() else {"gguf_file": model.name}
        base = AutoModelForCausalLM.from_pretrained(*where, **gguf, dtype=torch.float32)
        peft_model = PeftModel.from_pretrained(base, adapter).eval()
        reference = logits(peft_model, examples[:EXAMPLES])

        # 1. PEFT's own merge against the f32 directory's weights.
        merged_peft = {k: v.float() for k, v in peft_model.merge_and_unload().state_dict().items()}
        ours = load_file(tmp / "hf-f32" / "model.safetensors")
        if base.config.tie_word_embeddings:
            merged_peft.pop("lm_head.weight", None)
        check(sorted(ours) == sorted(merged_peft),
              f"the f32 directory holds PEFT's merged tensor names ({len(ours)})"
              + ("" if sorted(ours) == sorted(merged_peft) else
                 f": only ours {sorted(set(ours) - set(merged_peft))[:5]}, only PEFT's {sorted(set(merged_peft) - set(ours))[:5]}"))
        common = sorted(set(ours) & set(merged_peft))
        shapes = all(ours[k].shape == merged_peft[k].shape for k in common)
        check(shapes, "every tensor has PEFT's shape")
        if shapes:
            diff = max(float((ours[k] - merged_peft[k]).abs().max()) for k in common)
            largest = max(float(merged_peft[k].abs().max()) for k in common)
            check(diff <= WEIGHT_TOL * largest,
                  f"weights: largest difference from PEFT's merge_and_unload {diff:.2e}, largest weight {largest:.2f} "
                  f"(relative {diff / largest:.1e}, tolerance {WEIGHT_TOL:g})")

        # 2. transformers loads the directory as it is.
        hf = AutoModelForCausalLM.from_pretrained(tmp / "hf-f32", dtype=torch.float32).eval()
        diff, largest = worst(reference, logits(hf, examples[:EXAMPLES]))
        check(diff <= LOGIT_TOL * largest,
              f"logits: the f32 directory in transformers vs PEFT (base + adapter) on {min(EXAMPLES, len(examples))} "
              f"examples: largest difference {diff:.2e}, largest logit {largest:.1f} (relative {diff / largest:.1e}, tolerance {LOGIT_TOL:g})")

        # 3. Its tokenizer tokenizes as the base's does in transformers, and
        # renders conversations with the template tabtune trained with.
        if args.reference:
            print("  --   tokenizer: none in this GGUF")
        else:
            check_tokenizer(check, tmp, where, gguf, args.data, examples)

        # 4. bf16 is PyTorch's rounding of f32.
        bf16 = load_file(tmp / "hf-bf16" / "model.safetensors")
        same = all(bf16[k].dtype == torch.bfloat16 and torch.equal(bf16[k], ours[k].to(torch.bfloat16)) for k in ours)
        check(same and sorted(bf16) == sorted(ours), "bf16: every tensor is PyTorch's bf16 rounding of the f32 one")

        # 5. The merged GGUF files.
        if is_gguf:
            base_meta = gguf_meta(GGUFReader(model))
            f32 = GGUFReader(tmp / "merged-f32.gguf")
            f32_tensors = {t.name: t for t in f32.tensors}
            for ty, qtype in [("f32", None), ("f16", GGMLQuantizationType.F16), ("q8_0", GGMLQuantizationType.Q8_0)]:
                reader = f32 if ty == "f32" else GGUFReader(tmp / f"merged-{ty}.gguf")
                meta = gguf_meta(reader)
                # A base without a chat template gets the one tabtune trained with.
                added = {TEMPLATE} if TEMPLATE not in base_meta else set()
                keys = (set(meta) ^ set(base_meta)) - SET_BY_EXPORT - added
                changed = [k for k in set(meta) & set(base_meta) - SET_BY_EXPORT if meta[k] != base_meta[k]]
                check(not keys and not changed, f"{ty}: the metadata is the base's but for the keys the export sets"
                      + ("" if not keys and not changed else f" (differs: {sorted(keys)[:5]} {changed[:5]})"))
                if qtype is None:
                    continue
                wrong = []
                for t in reader.tensors:
                    src = np.asarray(f32_tensors[t.name].data, dtype=np.float32)
                    if src.ndim == 1:
                        expected, want = src, GGMLQuantizationType.F32
                    elif qtype == GGMLQuantizationType.Q8_0 and src.shape[-1] % 32:
                        expected, want = src.astype(np.float16), GGMLQuantizationType.F16
                    elif qtype == GGMLQuantizationType.F16:
                        expected, want = src.astype(np.float16), qtype
                    else:
                        expected, want = quantize(src, qtype), qtype
                    if t.tensor_type != want or np.asarray(t.data).tobytes() != expected.tobytes():
                        wrong.append(t.name)
                check(not wrong, f"{ty}: all {len(reader.tensors)} tensors are gguf-py's {ty} of the f32 file's"
                      + ("" if not wrong else f" except {wrong[:5]}"))
            # Against PEFT on transformers' own reading of the base GGUF: its GGUF
            # reader leaves some settings at their defaults (Gemma's
            # query_pre_attn_scalar), the same for both files.
            gguf_reference = reference
            if args.reference:
                try:
                    base_gguf = AutoModelForCausalLM.from_pretrained(model.parent, gguf_file=model.name,
                                                                     dtype=torch.float32)
                    gguf_reference = logits(PeftModel.from_pretrained(base_gguf, adapter).eval(), examples[:EXAMPLES])
                except RuntimeError as e:
                    # transformers' GGUF reader takes Qwen3's head size as 128, whatever the file says.
                    gguf_reference = None
                    print(f"  --   logits of the f32 GGUF in transformers: not compared, transformers cannot read the "
                          f"base GGUF itself ({str(e).splitlines()[0][:80]})")
            if gguf_reference is not None:
                hf_gguf = AutoModelForCausalLM.from_pretrained(tmp, gguf_file="merged-f32.gguf",
                                                               dtype=torch.float32).eval()
                diff, largest = worst(gguf_reference, logits(hf_gguf, examples[:EXAMPLES]))
                check(diff <= LOGIT_TOL * largest,
                      f"logits: the f32 GGUF in transformers vs PEFT on the base GGUF in transformers: largest "
                      f"difference {diff:.2e} (relative {diff / largest:.1e}, tolerance {LOGIT_TOL:g})")

    if failed:
        sys.exit(f"merged check FAILED ({len(failed)} of its checks)")
    print("merged check passed")


if __name__ == "__main__":
    main()
