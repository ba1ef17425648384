"""Writes a tiny random Llama with SmolLM2's tokenizer, for the browser tests.

WebGPU here is SwiftShader (a CPU Vulkan) and very slow, so the WebGPU run
trains this model: 2 layers, width 64, SmolLM2's 49152-token vocabulary and
chat template. It is saved by transformers (the layout the hub serves) into
OUT/hub/tabtune-test/tiny-chat/resolve/main/, which the test server mounts at
/hub, so the same folder is a local model directory and a hub repository.
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = Path(sys.argv[1]) / "hub" / "tabtune-test" / "tiny-chat" / "resolve" / "main"
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(7)
config = LlamaConfig(
    vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
    bos_token_id=1, eos_token_id=2,
)
model = LlamaForCausalLM(config).to(torch.float32)
model.save_pretrained(out, safe_serialization=True)
tok = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2" / "hf_tokenizer"
for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
    shutil.copy(tok / name, out / name)
for extra in ["generation_config.json"]:
    (out / extra).unlink(missing_ok=True)
print(out)
