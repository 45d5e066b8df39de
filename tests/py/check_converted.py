#!/usr/bin/env python3
"""Independent check of a GGUF made by subllm-convert from an official-format SUBLLM fixture.

    check_converted.py MODEL_DIR OUT.gguf

Reads the fixture's safetensors and config with NumPy, derives every expected GGUF tensor
(names, the per-head q/k permutation llama.cpp's converter applies, the w12 gate/up split,
region numbering), reads the GGUF with ggml's `gguf` package, and requires exact equality of
every tensor and of the hyper-parameter keys. Prints "ok N" on success.
"""
import json
import os
import struct
import sys

import numpy as np
import gguf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from subllm_ref import parse_structure  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        s, e = info["data_offsets"]
        out[name] = np.frombuffer(data[s:e], dtype=np.float32).reshape(info["shape"])
    return out


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf's permute (rotate-half to interleaved rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    model_dir, path = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    src = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    h, f = cfg["decoder_attention_heads"], cfg["decoder_ffn_embed_dim"]
    ops = parse_structure(cfg["structure"], cfg["decoder_layers"])
    expected = {"token_embd.weight": src["decoder.embed_tokens.weight"],
                "output_norm.weight": src["decoder.layer_norm.weight"]}
    if not cfg["tie_weights"]:
        expected["output.weight"] = src["decoder.output_projection.weight"]
    for i in range(cfg["decoder_layers"]):
        p, o = f"decoder.layers.{i}.", f"blk.{i}."
        expected[o + "attn_norm.weight"] = src[p + "self_attn_layer_norm.weight"]
        expected[o + "attn_q.weight"] = permute(src[p + "self_attn.q_proj.weight"], h)
        expected[o + "attn_k.weight"] = permute(src[p + "self_attn.k_proj.weight"], h)
        if cfg["qk_bias"]:
            expected[o + "attn_q.bias"] = permute(src[p + "self_attn.q_proj.bias"], h)
            expected[o + "attn_k.bias"] = permute(src[p + "self_attn.k_proj.bias"], h)
        expected[o + "attn_v.weight"] = src[p + "self_attn.v_proj.weight"]
        expected[o + "attn_output.weight"] = src[p + "self_attn.out_proj.weight"]
        expected[o + "ffn_norm.weight"] = src[p + "final_layer_norm.weight"]
        w12 = src[p + "feedforward.swiglu.w12.weight"]
        expected[o + "ffn_gate.weight"] = w12[:f]
        expected[o + "ffn_up.weight"] = w12[f:]
        expected[o + "ffn_down.weight"] = src[p + "feedforward.swiglu.w3.weight"]
    for op in ops:
        if op[0] == "(":
            expected[f"sub.{op[1]}.score.weight"] = src[f"decoder.downsamplers.{op[1]}.to_scores.weight"][0]
        elif op[0] == ")":
            bypass, region = op[1], op[2]
            expected[f"sub.{region}.bypass.weight"] = src[f"decoder.bypasses.{bypass}.bypass_scale"]

    r = gguf.GGUFReader(path)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(expected), (sorted(set(got) ^ set(expected)))
    for name, want in expected.items():
        t = got[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (name, t.tensor_type)
        have = np.asarray(t.data).reshape(want.shape)
        assert np.array_equal(have, want), name

    field = lambda k: r.fields[k].parts[r.fields[k].data[0]]
    arch = bytes(field("general.architecture")).decode()
    assert arch == ("subllm" if "(" in cfg["structure"] else "llama"), arch
    want_keys = {"embedding_length": cfg["decoder_embed_dim"], "feed_forward_length": f,
                 "block_count": cfg["decoder_layers"], "attention.head_count": h,
                 "attention.head_count_kv": h, "vocab_size": cfg["num_embeddings"],
                 "rope.dimension_count": cfg["decoder_embed_dim"] // h, "context_length": cfg["tokens_per_sample"]}
    for k, v in want_keys.items():
        assert int(field(f"{arch}.{k}")[0]) == v, k
    assert abs(float(field(f"{arch}.attention.layer_norm_rms_epsilon")[0]) - 1e-5) < 1e-12
    assert float(field(f"{arch}.rope.freq_base")[0]) == 10000.0
    if arch == "subllm":
        assert bytes(field("subllm.structure")).decode() == cfg["structure"]
    print("ok", len(expected))


if __name__ == "__main__":
    main()
