#!/usr/bin/env python3
"""Writes the reference fixtures under tests/fixtures/ that the Rust tests compare to.

Every number the native tests check comes from here, computed by the
reference implementations (PyTorch + transformers + PEFT, the `gguf`
package), in the style of llm.c's `train_gpt2.py` `write_state`:

* tiny_llama/        a tiny random Llama (untied, f32 safetensors + config.json),
                     the same weights as GGUF (llama.cpp's q/k row permutation),
                     a PEFT LoRA adapter with non-zero B, and reference.safetensors:
                     inputs, logits with and without the adapter, the masked loss,
                     every lora_A/lora_B gradient, and the losses of 4 training steps
                     (AdamW, warm-up + cosine, 2 micro-batches per step, global-norm clip).
* tiny_llama/adapter.gguf  that adapter as a GGUF LoRA written by gguf-py (a golden file for
                     tabtune's GGUF LoRA export).
* tiny_llama_tied/   a tied-embedding variant stored as f16 and bf16, with reference logits.
* tiny_qwen2/, tiny_qwen3/, tiny_gemma3/   the same for the other families (HF files with a
                     character tokenizer, their
                     GGUF as llama.cpp's converter writes it, a PEFT adapter, and
                     reference.safetensors: logits and masked loss with and without it,
                     every LoRA gradient; for Gemma also logits at another attention scale).
* quant_types.gguf   one tensor per ggml type tabtune reads, with
  quant_types_expected.safetensors   gguf.quants.dequantize of each.
* smollm2/           (when the default model is in the cache) tokenizer ids for a set
                     of strings, chat-template renderings, and logits of a prompt, from
                     transformers loading the same GGUF file.
* gemma3/            (when Gemma-3-270M is in the cache) the same for it: token ids of a set
                     of strings and the logits of a prompt, from transformers loading the GGUF.
* pretokenizers.json (when the default model is in the cache) its vocabulary relabelled with
                     Qwen2's and Llama 3's `tokenizer.ggml.pre`: transformers' ids of a set of strings.
* data/formats/reference.json   for each data file in data/formats/, its
                     conversations as transformers' apply_chat_template renders them
                     with SmolLM2's template, their ids, and the trained-token mask
                     found independently: tokens whose offsets fall inside an
                     assistant turn's content or its closing <|im_end|>.

Run: scripts/make_fixtures.py [PART ...]   (needs the venv made by scripts/setup-python.sh;
     PART is one of quant_types, tiny, tiny_tied, smollm2, formats, qwen2, qwen3, gemma3,
     gemma3_real, pretokenizers, lora_golden; default all)
"""
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import gguf
from gguf import GGMLQuantizationType as Q
from gguf import quants

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
MODEL_CACHE = Path(os.environ.get("TABTUNE_CACHE", Path.home() / ".cache" / "tabtune")) / "models"
SMOL = MODEL_CACHE / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = MODEL_CACHE / "gemma3" / "gemma-3-270m-q4_k_m.gguf"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_config(tied):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5,
        rope_theta=5e4, max_position_embeddings=64, tie_word_embeddings=tied,
        initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )


def batch(seed, b, t, vocab):
    """Random ids [b, t] and a label mask [b, t]: prompt tokens and right padding are 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[:, :3] = False  # a 3-token "prompt" that is not trained
    mask[1, t - 2:] = False  # second row is 2 tokens shorter (padding)
    ids[1, t - 2:] = 0
    return ids, mask


def masked_nll_sum(model, ids, mask):
    """Sum over trained positions of -log p(ids[t] | ids[<t]), and their count."""
    logits = model(input_ids=ids).logits.float()  # [B, T, V]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    tgt = ids[:, 1:]
    nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    m = mask[:, 1:]
    return (nll * m).sum(), int(m.sum())


def permute_for_gguf(w, n_head):
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`: rotate-half -> interleaved rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(model, cfg, path):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for name, t in model.state_dict().items():
        t = t.detach().float()
        if name.endswith("q_proj.weight"):
            t = permute_for_gguf(t, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            t = permute_for_gguf(t, cfg.num_key_value_heads)
        w.add_tensor(names[name], t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cosine_with_warmup(step, warmup, total):
    """transformers.get_cosine_schedule_with_warmup's lr_lambda."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_tiny():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    out = FIX / "tiny_llama"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = tiny_config(tied=False)
    model = LlamaForCausalLM(cfg).float().eval()
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    write_tiny_gguf(model, cfg, out / "tiny_llama.gguf")

    ref = {}
    ids, mask = batch(1, 2, 12, cfg.vocab_size)
    ref["input_ids"] = ids.to(torch.int64)
    ref["loss_mask"] = mask.to(torch.uint8)
    with torch.no_grad():
        ref["logits_base"] = model(input_ids=ids).logits.float()
        s, n = masked_nll_sum(model, ids, mask)
        ref["loss_base"] = (s / n).reshape(1)

    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    pm.save_pretrained(out / "adapter")
    pm.train()  # dropout is 0, so train() changes nothing numerically
    s, n = masked_nll_sum(pm, ids, mask)
    loss = s / n
    loss.backward()
    ref["loss_lora"] = loss.detach().reshape(1)
    with torch.no_grad():
        ref["logits_lora"] = pm(input_ids=ids).logits.float()
    for name, p in pm.named_parameters():
        if p.requires_grad:
            key = name.replace(".default", "")
            ref["grad." + key] = p.grad.detach().clone()
            p.grad = None

    # Four optimizer steps, two micro-batches each, from the adapter state above.
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    steps, warmup = 4, 1
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, warmup, steps))
    losses, norms = [], []
    for step in range(steps):
        micro = [batch(100 + 2 * step + k, 2, 10, cfg.vocab_size) for k in range(2)]
        total = sum(int(m[:, 1:].sum()) for _, m in micro)
        acc = 0.0
        for mids, mm in micro:
            s, _ = masked_nll_sum(pm, mids, mm)
            (s / total).backward()
            acc += float(s)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, 1.0)))
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(acc / total)
        for k, (mids, mm) in enumerate(micro):
            ref[f"train.step{step}.micro{k}.input_ids"] = mids.to(torch.int64)
            ref[f"train.step{step}.micro{k}.loss_mask"] = mm.to(torch.uint8)
    ref["train.losses"] = torch.tensor(losses, dtype=torch.float32)
    ref["train.grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for name, p in pm.named_parameters():
        if p.requires_grad:
            ref["trained." + name.replace(".default", "")] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in ref.items()}, out / "reference.safetensors")
    print("tiny_llama: loss_base", float(ref["loss_base"]), "loss_lora", float(loss), "train", losses)


def make_tiny_tied():
    from transformers import LlamaForCausalLM

    out = FIX / "tiny_llama_tied"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(3)
    cfg = tiny_config(tied=True)
    model = LlamaForCausalLM(cfg).float().eval()
    ids, _ = batch(4, 2, 12, cfg.vocab_size)
    ref = {"input_ids": ids.to(torch.int64)}
    for dtype, tag in [(torch.float16, "f16"), (torch.bfloat16, "bf16")]:
        d = out / tag
        d.mkdir(exist_ok=True)
        m = LlamaForCausalLM(cfg)
        m.load_state_dict(model.state_dict())
        m = m.to(dtype)
        m.save_pretrained(d, safe_serialization=True)
        (d / "generation_config.json").unlink(missing_ok=True)
        with torch.no_grad():  # compute in f32 from the rounded weights, as tabtune does
            ref[f"logits_{tag}"] = m.float()(input_ids=ids).logits.float()
    save_file(ref, out / "reference.safetensors")


# The other families: what each adds to Llama, small enough to check every number.
ARCH_TINY = {
    "qwen2": dict(cls="Qwen2", tie=True, extra={}),
    "qwen3": dict(cls="Qwen3", tie=False, extra={"head_dim": 16}),
    "gemma3": dict(cls="Gemma3Text", tie=True, extra={
        "head_dim": 8, "num_hidden_layers": 6, "sliding_window": 5, "rope_local_base_freq": 1e4,
        "query_pre_attn_scalar": 8, "pad_token_id": 0}),
}


def arch_config(arch, **override):
    import transformers

    spec = ARCH_TINY[arch]
    kw = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=5e4,
              max_position_embeddings=64, tie_word_embeddings=spec["tie"], initializer_range=0.1,
              bos_token_id=1, eos_token_id=2)
    kw.update(spec["extra"])
    kw.update(override)
    return getattr(transformers, spec["cls"] + "Config")(**kw)


def arch_model(arch, cfg):
    import transformers

    cls = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma3": "Gemma3ForCausalLM"}[arch]
    return getattr(transformers, cls)(cfg).float().eval()


def write_arch_gguf(arch, model, cfg, path):
    """The GGUF llama.cpp's convert_hf_to_gguf.py writes for these families: no q/k row
    permutation (NeoX RoPE); Gemma's norms stored as 1 + w (its `norm_shift`)."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    theta = cfg.rope_parameters
    w.add_rope_freq_base((theta["full_attention"] if arch == "gemma3" else theta)["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    if arch == "gemma3":
        w.add_sliding_window(cfg.sliding_window)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "post_attention_norm" if arch == "gemma3" else "ffn_norm",
        "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in per_layer.items():
            for kind in ("weight", "bias"):
                names[f"model.layers.{i}.{hf}.{kind}"] = f"blk.{i}.{gg}.{kind}"
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        t = t.detach().float()
        if arch == "gemma3" and name.endswith("norm.weight"):
            t = t + 1.0
        w.add_tensor(names[name], t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_char_tokenizer(out):
    """A character tokenizer for the tiny models' 96 ids, so `tabtune train` and transformers can
    read text with them: <unk>, <bos>, <eos>, then the printable ASCII characters ' '..'|'."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2}
    vocab.update({chr(c): 3 + i for i, c in enumerate(range(32, 125))})
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))  # no merges: one token a character
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>")
    fast.save_pretrained(out)


def make_arch(arch):
    """tiny_<arch>/: HF files, the GGUF, a PEFT adapter and reference.safetensors with
    logits and masked loss with and without it, and every LoRA gradient."""
    from peft import LoraConfig, get_peft_model

    out = FIX / f"tiny_{arch}"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(11)
    cfg = arch_config(arch)
    model = arch_model(arch, cfg)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():  # norms and biases start at constants: make them matter
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                base = 0.0 if arch == "gemma3" else 1.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    write_arch_gguf(arch, model, cfg, out / f"tiny_{arch}.gguf")
    write_char_tokenizer(out)

    ref = {}
    ids, mask = batch(13, 2, 12, cfg.vocab_size)
    ref["input_ids"] = ids.to(torch.int64)
    ref["loss_mask"] = mask.to(torch.uint8)
    with torch.no_grad():
        ref["logits_base"] = model(input_ids=ids).logits.float()
        s, n = masked_nll_sum(model, ids, mask)
        ref["loss_base"] = (s / n).reshape(1)
        if arch == "gemma3":  # another query_pre_attn_scalar: attention scaled by 20^-1/2, not 8^-1/2
            scaled = arch_model(arch, arch_config(arch, query_pre_attn_scalar=20))
            scaled.load_state_dict(model.state_dict())
            ref["logits_scaled"] = scaled(input_ids=ids).logits.float()

    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    pm.save_pretrained(out / "adapter")
    s, n = masked_nll_sum(pm, ids, mask)
    loss = s / n
    loss.backward()
    ref["loss_lora"] = loss.detach().reshape(1)
    with torch.no_grad():
        ref["logits_lora"] = pm(input_ids=ids).logits.float()
    for name, p in pm.named_parameters():
        if p.requires_grad:
            ref["grad." + name.replace(".default", "")] = p.grad.detach().clone()
    save_file({k: v.contiguous() for k, v in ref.items()}, out / "reference.safetensors")
    print(f"tiny_{arch}: loss_base", float(ref["loss_base"]), "loss_lora", float(loss))


def make_lora_golden():
    """tiny_llama/adapter.gguf: the tiny Llama's PEFT adapter as a GGUF LoRA written by gguf-py's
    GGUFWriter (the writer llama.cpp's convert_lora_to_gguf.py uses), with the keys, names, shapes
    and q/k row order tabtune's export writes, in its order: a golden file for the export."""
    from safetensors.torch import load_file

    src = FIX / "tiny_llama"
    cfg = json.loads((src / "config.json").read_text())
    acfg = json.loads((src / "adapter" / "adapter_config.json").read_text())
    peft = load_file(src / "adapter" / "adapter_model.safetensors")
    w = gguf.GGUFWriter(str(src / "adapter.gguf"), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_string("general.name", "tiny_llama LoRA")
    w.add_float32("adapter.lora.alpha", float(acfg["lora_alpha"]))
    w.add_uint32("general.quantization_version", 2)
    stems = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
             ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
             ("mlp.down_proj", "ffn_down")]
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in stems:
            key = f"base_model.model.model.layers.{i}.{hf}"
            a = peft[f"{key}.lora_A.weight"].float()  # [r, in]: ggml dims [in, r]
            b = peft[f"{key}.lora_B.weight"].float()  # [out, r]: ggml dims [r, out]
            if gg in heads:
                b = permute_for_gguf(b, heads[gg])
            w.add_tensor(f"blk.{i}.{gg}.weight.lora_a", a.numpy())
            w.add_tensor(f"blk.{i}.{gg}.weight.lora_b", b.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("lora_golden:", (src / "adapter.gguf").stat().st_size, "bytes")


def make_quant_types():
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(FIX / "quant_types.gguf"), "llama")
    expected = {}
    x = rng.standard_normal((2, 512)).astype(np.float32)
    for qt in [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]:
        raw = quants.quantize(x, qt)
        w.add_tensor(qt.name, raw, raw_dtype=qt)
        expected[qt.name] = torch.from_numpy(quants.dequantize(raw, qt).astype(np.float32).reshape(2, 512))
    # The k-quants have no quantizer in gguf-py: use random blocks with sane f16 scales.
    for qt in [Q.Q4_K, Q.Q5_K, Q.Q6_K]:
        block, nbytes = gguf.GGML_QUANT_SIZES[qt]
        blocks = rng.integers(0, 256, size=(2 * 512 // block, nbytes), dtype=np.uint8)
        scales = rng.uniform(0.001, 0.05, size=(blocks.shape[0], 2)).astype(np.float16).view(np.uint8)
        if qt == Q.Q6_K:
            blocks[:, nbytes - 2:] = scales[:, :2]  # d is last
        else:
            blocks[:, :4] = scales  # d, dmin first
        raw = blocks.reshape(2, -1)
        w.add_tensor(qt.name, raw, raw_dtype=qt)
        expected[qt.name] = torch.from_numpy(quants.dequantize(raw, qt).astype(np.float32).reshape(2, 512))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(expected, FIX / "quant_types_expected.safetensors")


def make_smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not SMOL.exists():
        sys.exit(f"{SMOL} is missing: run scripts/fetch-model.sh first")
    out = FIX / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(SMOL.parent, gguf_file=SMOL.name)
    strings = [
        "Hello world!",
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces and\ttabs\nand newlines\n\n",
        "Numbers 12345 and 3.14159, dates 2026-11-28.",
        "Ünïcödé: café, naïve, 日本語のテキスト, emoji 🙂👍🏽",
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "code: fn main() { println!(\"{}\", x); } // done",
        "",
    ]
    cases = [{"text": s, "ids": tok(s, add_special_tokens=True).input_ids} for s in strings]
    chats = [
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
         {"role": "assistant", "content": "Goodbye."}],
    ]
    rendered = [{"messages": c, "text": tok.apply_chat_template(c, tokenize=False),
                 "with_generation_prompt": tok.apply_chat_template(c[:1], tokenize=False, add_generation_prompt=True)}
                for c in chats]
    tok.save_pretrained(out / "hf_tokenizer")  # tokenizer.json, tokenizer_config.json, chat_template.jinja
    (out / "tokenizer_cases.json").write_text(json.dumps({"cases": cases, "chats": rendered}, ensure_ascii=False, indent=1))

    model = AutoModelForCausalLM.from_pretrained(SMOL.parent, gguf_file=SMOL.name, dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()[0]  # [T, V]
    save_file({"input_ids": ids[0].to(torch.int64).contiguous(), "logits": logits.contiguous()},
              out / "reference.safetensors")
    print("smollm2: prompt ids", ids.tolist(), "argmax", logits[-1].argmax().item())


TOKENIZER_STRINGS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and\ttabs\nand newlines\n\n",
    "Numbers 12345 and 3.14159, dates 2026-11-28.",
    "\u00dcn\u00efc\u00f6d\u00e9: caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8, emoji \U0001f642\U0001f44d\U0001f3fd",
    "code: fn main() { println!(\"{}\", x); } // done",
    "a    b     c\n\n\n   d",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "an <unk> and a <mask> token",
    "",
]


def make_gemma3_real():
    """gemma3/: the real Gemma-3-270M GGUF through transformers: token ids of a set of strings
    (its tokenizer rebuilt from the GGUF vocabulary) and the logits of a prompt (a subset, and
    each position's log-normaliser)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not GEMMA.exists():
        sys.exit(f"{GEMMA} is missing: run scripts/fetch-model.sh gemma3 first")
    out = FIX / "gemma3"
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(GEMMA.parent, gguf_file=GEMMA.name)
    cases = [{"text": s, "ids": tok(s, add_special_tokens=True).input_ids} for s in TOKENIZER_STRINGS]
    (out / "tokenizer_cases.json").write_text(json.dumps({"cases": cases}, ensure_ascii=False, indent=1))
    model = AutoModelForCausalLM.from_pretrained(GEMMA.parent, gguf_file=GEMMA.name, dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()[0]  # [T, V]
    # 262,144 logits a position is 1 MB: keep each position's log-normaliser and the logits of
    # a subset of ids (every position's top 64, and 256 drawn at random).
    g = torch.Generator().manual_seed(5)
    subset = torch.cat([logits.topk(64, dim=-1).indices.flatten(),
                        torch.randint(0, logits.shape[-1], (256,), generator=g)]).unique()
    save_file({"input_ids": ids[0].to(torch.int64).contiguous(),
               "logsumexp": torch.logsumexp(logits, dim=-1).contiguous(),
               "subset": subset.to(torch.int64).contiguous(),
               "logits_subset": logits[:, subset].contiguous()},
              out / "reference.safetensors")
    print("gemma3: prompt ids", ids.tolist(), "argmax", logits[-1].argmax().item(), tok.decode(logits[-1].argmax()))


def make_pretokenizers():
    """pretokenizers.json: the default model's byte-level vocabulary and merges, relabelled with
    the `tokenizer.ggml.pre` of Qwen2 and of Llama 3, through transformers (which splits by each
    one's regex): the ids of a set of strings. The Rust test relabels the same file the same way."""
    import tempfile
    from transformers import AutoTokenizer

    if not SMOL.exists():
        sys.exit(f"{SMOL} is missing: run scripts/fetch-model.sh first")
    r = gguf.GGUFReader(str(SMOL))
    field = lambda k: [bytes(r.fields[k].parts[i]).decode() for i in r.fields[k].data]
    tokens, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges")
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    strings = TOKENIZER_STRINGS + ["I'm here, they'll go; WE'RE 1234567 x  \n\n  y", "Qwen2 and Llama 3 split 2026 as 2,0,2,6 or 202,6"]
    result = {}
    for pre, arch in [("qwen2", "qwen2"), ("llama-bpe", "llama")]:
        with tempfile.TemporaryDirectory() as tmp:
            w = gguf.GGUFWriter(f"{tmp}/t.gguf", arch)
            w.add_tokenizer_model("gpt2")
            w.add_tokenizer_pre(pre)
            w.add_token_list(tokens)
            w.add_token_merges(merges)
            w.add_token_types(types)
            w.add_bos_token_id(1)
            w.add_eos_token_id(2)
            w.add_add_bos_token(False)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            tok = AutoTokenizer.from_pretrained(tmp, gguf_file="t.gguf")
            result[pre] = [{"text": t, "ids": tok(t, add_special_tokens=False).input_ids} for t in strings]
    (FIX / "pretokenizers.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print("pretokenizers:", {k: sum(len(c["ids"]) for c in v) for k, v in result.items()})


def formats_conversations(path):
    """The conversations of a data file, converted as tabtune documents it."""
    import csv
    name = path.name
    if name.endswith(".csv") or name.endswith(".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter="," if name.endswith(".csv") else "\t"))
        keys = list(rows[0].keys())
        p = next(k for k in keys if k.lower() in ("prompt", "question", "instruction", "input", "query", "user", "human"))
        r = next(k for k in keys if k.lower() in ("response", "completion", "answer", "output", "target", "assistant", "gpt"))
        return [[{"role": "user", "content": row[p]}, {"role": "assistant", "content": row[r]}] for row in rows]
    text = path.read_text()
    recs = json.loads(text) if name.endswith(".json") else [json.loads(l) for l in text.splitlines() if l.strip()]
    out = []
    for rec in recs:
        if "messages" in rec:
            out.append(rec["messages"])
        elif "conversations" in rec:
            role = {"human": "user", "gpt": "assistant", "system": "system"}
            out.append([{"role": role[m["from"]], "content": m["value"]} for m in rec["conversations"]])
        else:
            prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
            out.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": rec["output"]}])
    return out


def make_formats():
    import re
    from transformers import AutoTokenizer

    if not SMOL.exists():
        sys.exit(f"{SMOL} is missing: run scripts/fetch-model.sh first")
    tok = AutoTokenizer.from_pretrained(SMOL.parent, gguf_file=SMOL.name)
    folder = FIX / "data" / "formats"
    result = {}
    for path in sorted(folder.glob("*")):
        if path.suffix not in (".json", ".jsonl", ".csv", ".tsv") or path.name == "reference.json":
            continue
        examples = []
        for messages in formats_conversations(path):
            text = tok.apply_chat_template(messages, tokenize=False)
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            # Trained spans: each assistant turn's content through its <|im_end|>.
            spans = [(m.start(1), m.end(1)) for m in re.finditer(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", text, re.S)]
            trained = [any(a <= s < b for a, b in spans) and e > s for s, e in enc["offset_mapping"]]
            examples.append({"text": text, "ids": enc["input_ids"], "trained": trained})
        result[path.name] = examples
    (folder / "reference.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print("formats:", {k: len(v) for k, v in result.items()})


PARTS = {"quant_types": lambda: make_quant_types(), "tiny": lambda: make_tiny(),
         "tiny_tied": lambda: make_tiny_tied(), "smollm2": lambda: make_smollm2(),
         "formats": lambda: make_formats(), "qwen2": lambda: make_arch("qwen2"),
         "qwen3": lambda: make_arch("qwen3"), "gemma3": lambda: make_arch("gemma3"),
         "gemma3_real": lambda: make_gemma3_real(), "pretokenizers": lambda: make_pretokenizers(),
         "lora_golden": lambda: make_lora_golden()}

if __name__ == "__main__":
    torch.set_num_threads(2)
    FIX.mkdir(parents=True, exist_ok=True)
    for part in sys.argv[1:] or list(PARTS):
        if part not in PARTS:
            sys.exit(f"unknown part {part}; one of {', '.join(PARTS)}")
        PARTS[part]()
