#!/usr/bin/env python3
"""Turns a llama.cpp Llama GGUF back into a Hugging Face LlamaForCausalLM directory.

    gguf_to_hf.py MODEL.gguf OUTDIR [--shards N]

Tensors are dequantized with ggml's `gguf` package, q/k rows are un-permuted (the inverse of
llama.cpp's rotate-half -> interleaved permutation), names are mapped back to HF, and the
weights are written as N float32 safetensors shards with a model.safetensors.index.json.
"""
import json
import os
import sys

import numpy as np
import gguf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from make_fixtures import write_safetensors  # noqa: E402


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    src, out = sys.argv[1], sys.argv[2]
    shards = int(sys.argv[sys.argv.index("--shards") + 1]) if "--shards" in sys.argv else 1
    os.makedirs(out, exist_ok=True)
    r = gguf.GGUFReader(src)
    fv = lambda k: r.fields[k].parts[r.fields[k].data[0]]
    num = lambda k: fv(k)[0].item()
    heads, kv_heads = num("llama.attention.head_count"), num("llama.attention.head_count_kv")
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                 "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    tensors = []
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])
        if t.name in names:
            hf = names[t.name]
        else:
            _, i, kind, _ = t.name.split(".")
            hf = f"model.layers.{i}.{per_layer[kind]}.weight"
            if kind == "attn_q":
                w = unpermute(w, heads)
            elif kind == "attn_k":
                w = unpermute(w, kv_heads)
        tensors.append((hf, w))
    tensors.sort(key=lambda x: x[0])
    weight_map = {}
    per = (len(tensors) + shards - 1) // shards
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        chunk = tensors[s * per:(s + 1) * per]
        write_safetensors(os.path.join(out, fname), chunk)
        weight_map.update({n: fname for n, _ in chunk})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    tied = not any(t.name == "output.weight" for t in r.tensors)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": num("llama.embedding_length"), "intermediate_size": num("llama.feed_forward_length"),
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "num_hidden_layers": num("llama.block_count"), "rms_norm_eps": num("llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": num("llama.rope.freq_base"), "max_position_embeddings": num("llama.context_length"),
        "vocab_size": len(r.fields["tokenizer.ggml.tokens"].data), "tie_word_embeddings": tied,
        "bos_token_id": num("tokenizer.ggml.bos_token_id"), "eos_token_id": num("tokenizer.ggml.eos_token_id"),
        "rope_scaling": None, "torch_dtype": "float32",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


if __name__ == "__main__":
    main()
