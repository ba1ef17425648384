#!/usr/bin/env python3
"""An adapter trained by `tabtune train` loads in PEFT and gives the same eval loss
as `tabtune eval` (within 1e-3 relative), for a GGUF model or a Hugging Face model
directory of any family tabtune reads.

Steps: train with the tabtune CLI; `tabtune eval --adapter --dump-tokens`;
load the same model in transformers (a GGUF dequantized to f32),
`PeftModel.from_pretrained(base, adapter_dir)`, and compute the mean token loss
over the dumped ids and masks. Also checks that transformers'
`apply_chat_template` + tokenizer produce the ids tabtune trained on.

Usage: peft_check.py --bin PATH_TO_TABTUNE --model MODEL.gguf|MODEL_DIR --data DATA.jsonl
       [--adapter DIR]   (check an adapter made elsewhere, e.g. by the page,
                          instead of training one)
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from run_cmd import run

REL_TOL = 1e-3



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", default="3")
    ap.add_argument("--adapter", help="an existing adapter directory; skips training")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(args.adapter) if args.adapter else Path(tmp) / "adapter"
        dump = Path(tmp) / "tokens.json"
        if not args.adapter:
            run([args.bin, "train", "--model", str(model), "--data", args.data, "--out", str(adapter),
                 "--steps", args.steps, "--batch", "2", "--seq-len", "128", "--lr", "2e-3", "--rank", "8"])
        tt = json.loads(run([args.bin, "eval", "--model", str(model), "--adapter", str(adapter),
                             "--data", args.data, "--seq-len", "128", "--dump-tokens", str(dump)]))
        tokens = json.loads(dump.read_text())

        # A GGUF file, or a directory transformers reads as it is.
        where = (model,) if model.is_dir() else (model.parent,)
        gguf = {} if model.is_dir() else {"gguf_file": model.name}
        tok = AutoTokenizer.from_pretrained(*where, **gguf)
        records = [json.loads(l) for l in Path(args.data).read_text().splitlines() if l.strip()]
        for i, (rec, ex) in enumerate(zip(records, tokens["examples"])):
            if "messages" in rec:
                ids = tok(tok.apply_chat_template(rec["messages"], tokenize=False)).input_ids
                if ids != ex["ids"][: len(ids)] or len(ids) != len(ex["ids"]):
                    sys.exit(f"record {i}: transformers renders ids {ids}, tabtune trained on {ex['ids']}")

        base = AutoModelForCausalLM.from_pretrained(*where, **gguf, dtype=torch.float32)
        peft_model = PeftModel.from_pretrained(base, adapter).eval()
        nll, count = 0.0, 0
        exs = tokens["examples"]
        with torch.no_grad():
            for start in range(0, len(exs), tokens["batch"]):
                chunk = exs[start:start + tokens["batch"]]
                t = max(len(e["ids"]) for e in chunk)
                ids = torch.zeros(len(chunk), t, dtype=torch.long)
                mask = torch.zeros(len(chunk), t, dtype=torch.bool)
                for b, e in enumerate(chunk):
                    ids[b, : len(e["ids"])] = torch.tensor(e["ids"])
                    mask[b, : len(e["ids"])] = torch.tensor(e["trained"])
                logp = torch.log_softmax(peft_model(input_ids=ids).logits.float()[:, :-1], -1)
                token_nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                nll += float((token_nll * mask[:, 1:]).sum())
                count += int(mask[:, 1:].sum())
        loss = nll / count
        rel = abs(loss - tt["loss"]) / tt["loss"]
        print(f"PEFT eval loss {loss:.6f} over {count} tokens; tabtune eval loss {tt['loss']:.6f} over {tt['tokens']}; "
              f"relative difference {rel:.2e} (tolerance {REL_TOL:g})")
        if count != tt["tokens"] or rel > REL_TOL:
            sys.exit("PEFT check FAILED")
        print("PEFT check passed")


if __name__ == "__main__":
    main()
