"""Write a 1B-class Llama GGUF with random Q4_0 weights for the page's
size test: Llama-3.2-1B's shapes (16 blocks, width 2048, MLP 8192, 32
heads over 8 key/value heads, a 128,256-token vocabulary, tied embeddings,
1.24 B parameters), every matrix in Q4_0 blocks of random 4-bit values with
a scale that gives the weights a standard deviation of about 0.02, the
norms at 1. The tokenizer and chat template are SmolLM2's (49,152 tokens,
which the larger embedding covers), copied from the default model's GGUF.

Usage: make_1b_model.py SMOLLM2.gguf OUT.gguf   (~700 MB, a few seconds)
"""

import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

VOCAB, D, FF, LAYERS, HEADS, KV_HEADS = 128256, 2048, 8192, 16, 32, 8
HEAD_DIM = D // HEADS
# Q4_0 is x = d·(q − 8) with q uniform in 0..15: std(q − 8) = 4.61.
SCALE = np.float16(0.02 / 4.61)


def random_q4_0(rng, rows, cols):
    """`[rows, cols]` in Q4_0 blocks (an f16 scale, then 16 bytes of nibbles)."""
    blocks = rows * cols // 32
    raw = np.empty((blocks, 18), dtype=np.uint8)
    raw[:, :2] = np.full(blocks, SCALE, dtype=np.float16).view(np.uint8).reshape(blocks, 2)
    raw[:, 2:] = rng.integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    return raw.reshape(rows, cols // 32 * 18)


def main(smollm2, out):
    rng = np.random.default_rng(1)
    src = gguf.GGUFReader(smollm2)
    w = gguf.GGUFWriter(out, "llama")
    w.add_name("random-llama-1b-q4_0")
    w.add_block_count(LAYERS)
    w.add_context_length(8192)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    for field in src.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            w.add_array(field.name, value)
        elif vtype == gguf.GGUFValueType.STRING:
            w.add_string(field.name, bytes(field.parts[-1]).decode("utf-8"))
        else:
            w.add_key_value(field.name, field.parts[-1].tolist()[0], vtype)
    w.add_tensor("token_embd.weight", random_q4_0(rng, VOCAB, D), raw_dtype=Q.Q4_0)
    w.add_tensor("output_norm.weight", np.ones(D, dtype=np.float32))
    shapes = {
        "attn_q": (HEADS * HEAD_DIM, D), "attn_k": (KV_HEADS * HEAD_DIM, D),
        "attn_v": (KV_HEADS * HEAD_DIM, D), "attn_output": (D, HEADS * HEAD_DIM),
        "ffn_gate": (FF, D), "ffn_up": (FF, D), "ffn_down": (D, FF),
    }
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(D, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(D, dtype=np.float32))
        for name, (rows, cols) in shapes.items():
            w.add_tensor(f"blk.{i}.{name}.weight", random_q4_0(rng, rows, cols), raw_dtype=Q.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
