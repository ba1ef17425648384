#!/usr/bin/env python3
"""Continue a tabtune run with TRL on one or many GPUs (written by `tabtune export --recipe`).

The folder holds:
  adapter/             the run's LoRA adapter (PEFT); training continues from it
  train.jsonl          the training data in TRL's formats (`messages`, `prompt`/`completion`, `text`)
  train.tokens.jsonl   the same data as tabtune trained on it: token ids and which are trained
                       (the answers only: assistant turns through their end-of-turn token)
  recipe.json          the base model and the run's settings
  accelerate/          configs for one GPU and for several

Run (the versions tabtune is checked against):
  pip install torch transformers==5.24.0 peft==0.21.2 trl==1.16.0 accelerate==1.16.0
  accelerate launch --config_file accelerate/one_gpu.yaml train.py
  accelerate launch --config_file accelerate/multi_gpu.yaml train.py   # set num_processes first

The loss is the one tabtune trained with: the mean over the trained tokens of each optimizer
step (TRL sums each micro-batch's token losses over all of the step's trained tokens), with
the answers-only mask carried by `labels` (-100 where a token is not trained). The LoRA
settings come with the adapter; the schedule (AdamW, warm-up then the decay, clipping, batch,
accumulation, length, seed) from recipe.json. The data order differs from tabtune's (the
Trainer's own shuffle), so only the start is the same step for step: `--eval-only` prints the
loss before training, which equals `tabtune eval` with this adapter.
"""
import argparse
import json
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

HERE = Path(__file__).resolve().parent
RECIPE = json.loads((HERE / "recipe.json").read_text())
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def tokens():
    """tabtune's examples: ids, and labels = ids where trained, -100 where not."""
    rows = [json.loads(line) for line in (HERE / "train.tokens.jsonl").read_text().splitlines() if line.strip()]
    return Dataset.from_list([
        {"input_ids": r["input_ids"], "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["trained"])]}
        for r in rows
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=RECIPE["base_model"],
                    help="the base model: a Hugging Face repository, a local folder, or a .gguf file")
    ap.add_argument("--max-steps", type=int, default=RECIPE["train"]["steps"])
    ap.add_argument("--output-dir", default=str(HERE / "output"))
    ap.add_argument("--cpu", action="store_true", help="train on the CPU in f32 (a check, not a run)")
    ap.add_argument("--eval-only", action="store_true", help="print the loss before training and stop")
    a = ap.parse_args()
    t = RECIPE["train"]
    base = Path(a.base)
    # A GGUF base is dequantized by transformers; a repository or folder is read as it is.
    where, gguf = (str(base.parent), {"gguf_file": base.name}) if a.base.endswith(".gguf") else (a.base, {})
    tok = AutoTokenizer.from_pretrained(where, **gguf)
    dtype = torch.float32 if a.cpu else "auto"
    model = AutoModelForCausalLM.from_pretrained(where, **gguf, dtype=dtype)
    if gguf:
        # transformers expands a GGUF's blocks into ordinary float weights but still marks the
        # model as quantized (GGUF), which its Trainer refuses to train: the marks go.
        model.hf_quantizer = None
        model.is_quantized = False
    model = PeftModel.from_pretrained(model, HERE / "adapter", is_trainable=True)
    data = tokens()
    bf16 = not a.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = SFTConfig(
        output_dir=a.output_dir, use_cpu=a.cpu, bf16=bf16, gradient_checkpointing=False,
        learning_rate=t["lr"], lr_scheduler_type=SCHEDULES[t["schedule"]], warmup_steps=t["warmup_steps"],
        weight_decay=t["weight_decay"], adam_beta1=t["beta1"], adam_beta2=t["beta2"], adam_epsilon=t["eps"],
        optim="adamw_torch", max_grad_norm=t["max_grad_norm"],
        per_device_train_batch_size=t["batch"], gradient_accumulation_steps=t["grad_accum"],
        max_steps=a.max_steps, max_length=t["seq_len"], packing=False, padding_free=False,
        # One evaluation batch: its loss is then the mean over all trained tokens, as tabtune's.
        per_device_eval_batch_size=len(data),
        seed=t["seed"], data_seed=t["seed"], report_to="none", logging_steps=1,
        save_strategy="no", eval_strategy="no",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tok)
    trained = sum(sum(1 for x in r["labels"][1:] if x != -100) for r in data)
    print(json.dumps({"eval_loss_before": trainer.evaluate()["eval_loss"], "tokens": trained}), flush=True)
    if a.eval_only:
        return
    trainer.train()
    trainer.save_model(str(Path(a.output_dir) / "adapter"))
    print(json.dumps({"steps": trainer.state.global_step, "adapter": str(Path(a.output_dir) / "adapter")}))


if __name__ == "__main__":
    main()
