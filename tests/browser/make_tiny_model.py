"""Writes a tiny random Llama with SmolLM2's tokenizer, for the browser tests.

WebGPU here is SwiftShader (a CPU Vulkan) and very slow, so the WebGPU run
trains this model: 2 layers, width 64, SmolLM2's 49152-token vocabulary and
chat template. It is saved by transformers (the layout the hub serves) into
OUT/hub/tabtune-test/tiny-chat/resolve/main/, which the test server mounts at
/hub, so the same folder is a local model directory and a hub repository.

Usage: make_tiny_model.py OUT [LAYERS [packable]]. With LAYERS (e.g. 30, the
default model's depth) it writes OUT/tiny-LAYERS/ instead: the default
model's graph (its blocks, heads, tied head and vocabulary) at a width
SwiftShader can run, for counting a training step's GPU kernel launches
(scripts/bench-browser.sh). With `packable` it writes OUT/tiny-LAYERS-packable/:
every width a whole number of 32-value blocks, so the page can quantize it at
load and count a packed base's launches, as the default model's Q4_1/Q8_0
GGUF has (width 128, 4 heads of 32 over 2, MLP 256: the launches do not
depend on the number of heads, one attention kernel takes them all, and
each projection's rows are a whole number of 256 bytes of block scales, so
q, k and v, and gate and up, join into one weight each on a GPU, as the
default model's do).

`make_tiny_model.py OUT gemma3` writes OUT/tiny-gemma3/: a tiny Gemma 3 with
the same tokenizer (2 layers of width 64, head size 16; the first slides
with a window of 16 and its own RoPE base, and attention is scaled by
query_pre_attn_scalar 24, not the head size), so that WebGPU runs the parts
our fused kernels leave to burn: the windowed mask, the attention scale,
GeGLU, q/k head norms, post-norms.
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

gemma = len(sys.argv) > 2 and sys.argv[2] == "gemma3"
layers = int(sys.argv[2]) if len(sys.argv) > 2 and not gemma else None
packable = len(sys.argv) > 3 and sys.argv[3] == "packable"
if gemma:
    out = Path(sys.argv[1]) / "tiny-gemma3"
elif layers is None:
    out = Path(sys.argv[1]) / "hub" / "tabtune-test" / "tiny-chat" / "resolve" / "main"
else:
    out = Path(sys.argv[1]) / (f"tiny-{layers}-packable" if packable else f"tiny-{layers}")
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(7)
# The layered twin keeps the default model's 9 heads over 3 KV heads.
width = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2) if layers is None \
    else dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2) if packable \
    else dict(hidden_size=72, intermediate_size=192, num_attention_heads=9, num_key_value_heads=3)
config = LlamaConfig(
    vocab_size=49152, num_hidden_layers=layers or 2, **width, max_position_embeddings=512,
    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
    bos_token_id=1, eos_token_id=2,
)
model = LlamaForCausalLM(config).to(torch.float32)
if gemma:
    from transformers import Gemma3TextConfig, Gemma3ForCausalLM

    config = Gemma3TextConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention"], sliding_window=16,
        rope_theta=1e6, rope_local_base_freq=1e4, query_pre_attn_scalar=24, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    model = Gemma3ForCausalLM(config).to(torch.float32)
model.save_pretrained(out, safe_serialization=True)
tok = Path(__file__).resolve().parents[1] / "fixtures" / "smollm2" / "hf_tokenizer"
for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
    shutil.copy(tok / name, out / name)
for extra in ["generation_config.json"]:
    (out / extra).unlink(missing_ok=True)
print(out)
