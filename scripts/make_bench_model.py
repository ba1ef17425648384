#!/usr/bin/env python3
"""Write a Llama with random weights and a real model's shapes, as a Hugging
Face directory (config.json, model.safetensors in f32, and SmolLM2's
tokenizer from tests/fixtures), for benchmarks on a machine that cannot
download the real one (a GPU machine without internet). Speed and memory do
not depend on the weights' values, only on the shapes, which match:

  smollm2-135m  30 blocks, width 576, MLP 1536, 9 heads over 3, 49,152 tokens (the default model)
  smollm2-360m  32 blocks, width 960, MLP 2560, 15 heads over 5, 49,152 tokens
  llama-1b      Llama-3.2-1B: 16 blocks, width 2048, MLP 8192, 32 heads over 8, 128,256 tokens

All tie the LM head to the embedding, as those models do.

Usage: make_bench_model.py OUT_DIR [--shape smollm2-135m]
"""
import argparse
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "smollm2-135m": dict(num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         rope_theta=100000.0),
    "smollm2-360m": dict(num_hidden_layers=32, hidden_size=960, intermediate_size=2560,
                         num_attention_heads=15, num_key_value_heads=5, vocab_size=49152,
                         rope_theta=100000.0),
    "llama-1b": dict(num_hidden_layers=16, hidden_size=2048, intermediate_size=8192,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                     rope_theta=500000.0),
}

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("out")
ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
args = ap.parse_args()
out = Path(args.out)
done = out / "shape.txt"
if done.exists() and done.read_text().strip() == args.shape and (out / "model.safetensors").exists():
    print(out)
    raise SystemExit(0)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
config = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=8192, rms_norm_eps=1e-5,
                     tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(config).to(torch.float32)
# One model.safetensors (tabtune reads no shards), even for llama-1b's 4.9 GB.
model.save_pretrained(out, safe_serialization=True, max_shard_size="100GB")
(out / "generation_config.json").unlink(missing_ok=True)
tok = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "smollm2" / "hf_tokenizer"
for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
    shutil.copy(tok / name, out / name)
(out / "shape.txt").write_text(args.shape + "\n")
print(out)
