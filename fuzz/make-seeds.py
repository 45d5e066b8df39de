#!/usr/bin/env python3
"""Writes the small seed corpus in fuzz/seeds/<target>/ (committed).

Run from the repository root after `cargo build --release`:
    python3 fuzz/make-seeds.py
Everything is generated: tiny checkpoints in the official SUBLLM layout and
in Hugging Face Llama layout (safetensors, and a torch.save-style zip written
with a stand-in `torch` module so that no PyTorch is needed), tiny GGUF files
from `subllm-convert --synthetic` and from the `gguf` package, tokenizer
inputs and chat templates.
"""
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import types
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
rng = np.random.default_rng(7)


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def subllm_checkpoint(d=16, ff=16, vocab=16, heads=2, structure="T(T)T"):
    layers = structure.count("T")
    regions = structure.count("(")
    cfg = {
        "num_embeddings": vocab, "decoder_embed_dim": d, "decoder_ffn_embed_dim": ff,
        "hidden_size": d, "decoder_layers": layers, "decoder_attention_heads": heads,
        "norm_name": "rmsnorm", "mlp_name": "swiglu", "qk_bias": False, "use_fused": False,
        "attn_type": "vanilla", "tokens_per_sample": 64, "n_positions": 64, "padding_idx": 0,
        "bos_token_id": 1, "eos_token_id": 2, "scale_token_embedding": False,
        "downsampling_factor_denominator": "0.64", "tie_weights": False, "structure": structure,
    }
    w = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
    t = collections.OrderedDict()
    for r in range(regions):
        t[f"decoder.bypasses.{r}.bypass_scale"] = w(d)
        t[f"decoder.downsamplers.{r}.to_scores.weight"] = w(1, d)
    t["decoder.embed_tokens.weight"] = w(vocab, d)
    t["decoder.layer_norm.weight"] = np.ones(d, np.float32)
    hd = d // heads
    for i in range(layers):
        p = f"decoder.layers.{i}."
        t[p + "feedforward.swiglu.w12.weight"] = w(2 * ff, d)
        t[p + "feedforward.swiglu.w3.weight"] = w(d, ff)
        t[p + "final_layer_norm.weight"] = np.ones(d, np.float32)
        for n in ["k_proj", "out_proj", "q_proj", "v_proj"]:
            t[p + f"self_attn.{n}.weight"] = w(d, d)
        t[p + "self_attn.position.inv_freq"] = (
            1.0 / 10000 ** (np.arange(0, hd, 2, dtype=np.float32) / hd)).astype(np.float32)
        t[p + "self_attn_layer_norm.weight"] = np.ones(d, np.float32)
    t["decoder.output_projection.weight"] = w(vocab, d)
    return cfg, t


def llama_checkpoint(d=16, ff=16, vocab=16, heads=2, kv=1, layers=1):
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d,
        "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 64, "bos_token_id": 1,
        "eos_token_id": 2, "tie_word_embeddings": False,
    }
    w = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
    hd = d // heads
    t = collections.OrderedDict()
    t["model.embed_tokens.weight"] = w(vocab, d)
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(d, np.float32)
        t[p + "self_attn.q_proj.weight"] = w(d, d)
        t[p + "self_attn.k_proj.weight"] = w(kv * hd, d)
        t[p + "self_attn.v_proj.weight"] = w(kv * hd, d)
        t[p + "self_attn.o_proj.weight"] = w(d, d)
        t[p + "post_attention_layernorm.weight"] = np.ones(d, np.float32)
        t[p + "mlp.gate_proj.weight"] = w(ff, d)
        t[p + "mlp.up_proj.weight"] = w(ff, d)
        t[p + "mlp.down_proj.weight"] = w(d, ff)
    t["model.norm.weight"] = np.ones(d, np.float32)
    t["lm_head.weight"] = w(vocab, d)
    return cfg, t


def safetensors_bytes(tensors, dtype="F32"):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = a.astype(np.float16 if dtype == "F16" else np.float32)
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def torch_zip(tensors, wrap=False, views=None):
    """A torch.save zip: data.pkl refers to storages data/<key> by persistent id;
    `views` maps a name to the (shape, stride) its tensor claims instead."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"

    def _rebuild_tensor_v2(*a):
        pass

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage = FloatStorage
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils

    class Storage:
        def __init__(self, key, n):
            self.key, self.n = key, n

    class Tensor:
        def __init__(self, storage, shape, stride=None):
            self.storage, self.shape, self.stride = storage, shape, stride

        def __reduce__(self):
            stride, s = [], 1
            for dim in reversed(self.shape):
                stride.insert(0, s)
                s *= dim
            stride = self.stride if self.stride is not None else stride
            return (_rebuild_tensor_v2,
                    (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.n)
            return None

    try:
        sd = collections.OrderedDict()
        blobs = {}
        for i, (name, a) in enumerate(tensors.items()):
            blobs[str(i)] = a.astype(np.float32).tobytes()
            shape, stride = (views or {}).get(name, (list(a.shape), None))
            sd[name] = Tensor(Storage(str(i), a.size), shape, stride)
        buf = io.BytesIO()
        P(buf, protocol=2).dump({"model": sd} if wrap else sd)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    out = io.BytesIO()
    # fixed timestamps, so the seeds are the same bytes on every run
    entry = lambda name: zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(entry("archive/data.pkl"), buf.getvalue())
        for k, b in blobs.items():
            z.writestr(entry(f"archive/data/{k}"), b)
        z.writestr(entry("archive/version"), "3\n")
    return out.getvalue(), buf.getvalue()


def regressions():
    """Inputs that found a bug, kept as files; tests run each through the
    code its target runs (convert/tests/fuzz_regressions.rs)."""
    d = os.path.join(ROOT, "fuzz", "regressions")
    t = collections.OrderedDict(w=np.ones(1, np.float32))
    # a stride-0 view of 2^31 elements over a storage of one: the loader
    # reserved 8 GiB for it before looking at the storage
    z, _ = torch_zip(t, views={"w": ([1 << 31], [0])})
    os.makedirs(os.path.join(d, "torch"), exist_ok=True)
    open(os.path.join(d, "torch", "stride0-expansion"), "wb").write(z)


def main():
    # checkpoints
    cases = [
        ("subllm-f32", subllm_checkpoint(), "F32"),
        ("subllm-d32-f16", subllm_checkpoint(d=32, ff=32, vocab=32, structure="T(T(T)T)T"), "F16"),
        ("llama-gqa", llama_checkpoint(), "F32"),
    ]
    for name, (cfg, t), dtype in cases:
        cj = json.dumps(cfg).encode()
        put("safetensors", name, cj + b"\0" + safetensors_bytes(t, dtype))
        z, pkl = torch_zip(t, wrap=name.endswith("f16"))
        put("torch", name, z)
        put("pickle", name, pkl)
        # each seed must convert, or the corpus starts shallow
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "config.json"), "wb").write(cj)
            open(os.path.join(d, "model.pt"), "wb").write(z)
            exe = os.path.join(ROOT, "target", "release", "subllm-convert")
            subprocess.run([exe, "-q", "--outtype", "q8_0", "-o", os.path.join(d, "o.gguf"), d], check=True)

    # GGUF files: synthetic models at several types, with the generated vocabulary
    exe = os.path.join(ROOT, "target", "release", "subllm-convert")
    specs = [
        ("llama-f32", "tiny-llama,d=32,layers=1,heads=2,kv_heads=1,ff=32,vocab=16,ctx=16", "f32"),
        ("llama-q8_0", "tiny-llama,d=32,layers=1,heads=2,ff=64,vocab=16,ctx=16", "q8_0"),
        ("llama-q4_1", "tiny-llama,d=32,layers=1,heads=1,kv_heads=1,ff=32,vocab=16,ctx=16", "q4_1"),
        ("subllm-q4_0", "tiny-subllm,d=32,structure=T(T)T,heads=2,ff=32,vocab=16,ctx=16", "q4_0"),
        ("llama-q4_k", "tiny-llama,d=256,layers=1,heads=8,kv_heads=1,ff=32,vocab=16,ctx=16", "q4_k"),
    ]
    with tempfile.TemporaryDirectory() as d:
        for name, spec, ty in specs:
            out = os.path.join(d, name + ".gguf")
            subprocess.run([exe, "-q", "--synthetic", spec, "--outtype", ty, "-o", out], check=True)
            put("gguf", name, open(out, "rb").read())

    import gguf
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "v.gguf")
        w = gguf.GGUFWriter(path, "llama")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        toks = ["<|im_start|>", "<|im_end|>"] + [bytes([b]).decode("latin-1") for b in range(33, 127)] + ["he", "ll", "hell", "hello"]
        w.add_token_list(toks)
        w.add_token_types([3, 3] + [1] * (len(toks) - 2))
        w.add_token_merges(["h e", "l l", "he ll", "hell o"])
        w.add_bos_token_id(0)
        w.add_eos_token_id(1)
        w.add_chat_template("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}")
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        put("gguf", "vocab-bpe", open(path, "rb").read())

    # tokenizer inputs: selector byte, then text
    texts = ["Hello world", " <|im_start|>user\nhi<|im_end|>", "  multiple   spaces\t\ttabs\n\n",
             "ünïcödé 日本語 🦙", "'s 're 123456 3.14", "<s></s><unk>", "\x00\x01\xff"]
    for i, t in enumerate(texts):
        for sel in (0, 3, 4, 7, 8, 11, 12, 15):
            put("tokenizer", f"t{i}-{sel}", bytes([sel]) + t.encode("utf-8", "surrogatepass"))
            put("capi_tokenize", f"t{i}-{sel}", bytes([sel | 12 | (sel & 1) << 4]) + t.encode("utf-8", "surrogatepass"))

    # chat templates
    templates = {
        "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "llama2": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}",
        "namespace": "{% set ns = namespace(sys='') %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.sys = m.content %}{% endif %}{% endfor %}{{ ns.sys | upper }}{% for m in messages | selectattr('role', 'ne', 'system') %}{{ loop.index }}:{{ m.content ~ '|' }}{% endfor %}",
        "macro": "{% macro f(s, n) %}{% if n > 0 %}{{ f(s ~ 'x', n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ f('a', 3) }}{{ messages | map(attribute='content') | join(',') | tojson }}",
        "loops": "{% for i in range(3) %}{% for m in messages %}{{ i * 2 }}{{ m.content[:2] }}{{ m.content | replace('e', 'E') }}{% endfor %}{% endfor %}{{ 'ab' * 2 }}",
    }
    for name, t in templates.items():
        put("chat_template", name, t.encode() + b"\0hello")


if __name__ == "__main__":
    main()
    regressions()
