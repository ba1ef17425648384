#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training throughput on the same model and settings as
`tabtune bench` (random tokens, every token trained, AdamW, r on all seven
projections, dropout 0, f32). Prints `N tokens/s`, the step's model FLOPs
and peak memory (on CUDA also the GPU's). `--checkpointing` recomputes each
decoder layer in the backward pass (transformers' gradient checkpointing),
as tabtune does by default. `--model` is a .gguf file or a Hugging Face
directory; `--device cuda` runs on the GPU (f32 matrix products with TF32
off; attention is PyTorch's default SDPA kernel, whatever it computes in).
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
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--checkpointing", action="store_true")
ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
args = ap.parse_args()
torch.set_num_threads(os.cpu_count())
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
m = Path(args.model)
if m.is_dir():
    model = AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32)
else:
    model = AutoModelForCausalLM.from_pretrained(m.parent, gguf_file=m.name, dtype=torch.float32)
model.to(args.device)
cfg = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
if args.checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model = get_peft_model(model, cfg)
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), device=args.device)


def sync():
    if args.device == "cuda":
        torch.cuda.synchronize()


def model_flops():
    """Multiply-adds x2 of one training step with a frozen base, as counted
    for model FLOPs utilisation: every base product forward and its input
    gradient backward (4 per weight per token; no weight gradient), LoRA's
    A and B forward, input and weight gradients (6 per factor weight per
    token), attention's two products forward and backward (12·T·width per
    layer per token, no causal halving). Recomputation is not counted."""
    c = model.config
    d, f, layers, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    hd = getattr(c, "head_dim", None) or d // c.num_attention_heads
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, f), (d, f), (f, d)]
    base = layers * sum(i * o for i, o in shapes) + d * v
    lora = layers * sum(args.rank * (i + o) for i, o in shapes)
    tokens = args.batch * args.seq_len
    attn = 12 * layers * args.seq_len * q
    return tokens * (4 * base + 6 * lora + attn)


def step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad()


for _ in range(args.warmup):
    step()
sync()
if args.device == "cuda":
    torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
for _ in range(args.steps):
    step()
sync()
secs = time.perf_counter() - t0
print(f"{args.steps * args.batch * args.seq_len / secs:.1f} tokens/s")
print(f"{secs / args.steps:.3f} s/step")
print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
print(f"model FLOPs per step {model_flops():.4e}")
if args.device == "cuda":
    print(f"GPU memory reserved {torch.cuda.max_memory_reserved() / 2**20:.0f} MiB")
    print(f"GPU memory allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"GPU {torch.cuda.get_device_name()}")
