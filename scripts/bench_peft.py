#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training throughput on the same model file and settings
as `tabtune bench` (random tokens, every token trained, AdamW, r on all seven
projections, dropout 0, f32 on the CPU). Prints `N tokens/s` and peak memory.
`--checkpointing` recomputes each decoder layer in the backward pass
(transformers' gradient checkpointing), as tabtune does by default.
"""
import argparse
import os
import resource
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--seq-len", type=int, default=256)
ap.add_argument("--rank", type=int, default=8)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--checkpointing", action="store_true")
args = ap.parse_args()
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
m = Path(args.model)
model = AutoModelForCausalLM.from_pretrained(m.parent, gguf_file=m.name, dtype=torch.float32)
cfg = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
if args.checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model = get_peft_model(model, cfg)
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len))


def step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad()


step()  # warm-up
t0 = time.perf_counter()
for _ in range(args.steps):
    step()
secs = time.perf_counter() - t0
print(f"{args.steps * args.batch * args.seq_len / secs:.1f} tokens/s")
print(f"{secs / args.steps:.3f} s/step")
print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
