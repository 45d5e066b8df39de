#!/usr/bin/env python3
"""Deterministic tiny SUBLLM checkpoints in the official format, with golden outputs from the
float64 reference (subllm_ref.py).

    python3 tests/reference/make_fixtures.py OUTDIR [NAME ...]

Each fixture directory holds config.json, model.safetensors (float32, official `decoder.*`
names including the inv_freq buffers), tokenizer.json (a small byte-level BPE) and golden/:

  tokens.txt            "prompt <ids>", "decode <ids>", "kept <k> <abs positions>" per subsampler
  prefill.npy           logits of the one-shot prompt prefill            [n_prompt, V]
  decode.npy            logits of each 1-token decode step after it      [n_decode, V]
  prefill_upstream.npy  prefill with the upstream level>=2 positions (doc section 7)
  decode_upstream.npy   decode steps after that upstream prefill

Subsampler weights are solved by least squares against the rows each subsampler actually sees,
so every fixture has a chosen keep pattern and every score is at least 0.1 away from 0.
"""
import json
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from subllm_ref import Model, parse_structure  # noqa: E402

CORPUS = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters. In the beginning God created the heaven and the earth. And the earth was "
    "without form, and void; and darkness was upon the face of the deep. The quick brown fox jumps "
    "over the lazy dog 0123456789 times! Emma Woodhouse, handsome, clever, and rich, with a comfortable "
    "home and happy disposition, seemed to unite some of the best blessings of existence; and had lived "
    "nearly twenty-one years in the world with very little to distress or vex her. Sir Walter Elliot, of "
    "Kellynch Hall, in Somersetshire, was a man who, for his own amusement, never took up any book but the "
    "Baronetage. And God said, Let there be light: and there was light. And God saw the light, that it "
    "was good: and God divided the light from the darkness. Subsampling keeps the tokens that matter; "
    "upsampling brings them back, and the bypass blends both streams, channel by channel."
)

# name -> spec. patterns: one per subsampler (opening order): "random" keeps 40-70% of the rows it
# sees, "none" keeps no row, "all" keeps every row, "decode-only" keeps only rows after the prompt.
FIXTURES = {
    "llama": dict(structure="TTT", d=64, heads=4, ffn=172, vocab=512, patterns=[]),
    "nested": dict(structure="TT(TT(T)T)T", d=64, heads=4, ffn=172, vocab=512, patterns=["random", "random"]),
    "siblings": dict(structure="T(T)T(TT)T", d=64, heads=4, ffn=172, vocab=512, patterns=["random", "random"],
                     qk_bias=True, tie=True),
    "k256": dict(structure="T(TT)T", d=256, heads=4, ffn=512, vocab=300, patterns=["random"]),
    "edges": dict(structure="T(T(T)T)T(T)T", d=64, heads=4, ffn=172, vocab=512,
                  patterns=["all", "decode-only", "none"]),
}
N_PROMPT, N_DECODE = 20, 8


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def train_bpe(vocab_size, n_special):
    """A byte-level BPE trained on CORPUS: returns (vocab dict, merges list)."""
    b2u = bytes_to_unicode()
    words = {}
    for w in re.findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", CORPUS):
        key = tuple(b2u[b] for b in w.encode())
        words[key] = words.get(key, 0) + 1
    vocab = {}
    for i, b in enumerate(sorted(b2u)):
        vocab[b2u[b]] = n_special + i
    merges = []
    while len(vocab) + n_special < vocab_size:
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(f"{best[0]} {best[1]}")
        vocab[best[0] + best[1]] = n_special + len(vocab)
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    return vocab, merges


def tokenizer_json(vocab_size):
    specials = ["<pad>", "<s>", "</s>"]
    vocab, merges = train_bpe(vocab_size, len(specials))
    full = {t: i for i, t in enumerate(specials)}
    full.update(vocab)
    assert len(full) == vocab_size, (len(full), vocab_size)
    added = [dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
             for i, t in enumerate(specials)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": full, "merges": merges},
    }


def write_safetensors(path, tensors):
    """Writes float32 safetensors from a dict or an iterable of (name, array) pairs."""
    header, offset, blobs = {}, 0, []
    for name, arr in (tensors.items() if isinstance(tensors, dict) else tensors):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        blobs.append(arr.tobytes())
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def config_for(spec):
    return {
        "num_embeddings": spec["vocab"], "decoder_embed_dim": spec["d"], "hidden_size": spec["d"],
        "decoder_ffn_embed_dim": spec["ffn"], "decoder_layers": spec["structure"].count("T"),
        "decoder_attention_heads": spec["heads"], "norm_name": "rmsnorm", "mlp_name": "swiglu",
        "qk_bias": spec.get("qk_bias", False), "use_fused": False, "attn_type": "vanilla",
        "tokens_per_sample": 256, "n_positions": 256, "padding_idx": 0, "bos_token_id": 1, "eos_token_id": 2,
        "scale_token_embedding": False, "downsampling_factor_denominator": "0.64",
        "tie_weights": spec.get("tie", False), "structure": spec["structure"],
    }


def random_weights(cfg, rng):
    d, f, v, h = cfg["decoder_embed_dim"], cfg["decoder_ffn_embed_dim"], cfg["num_embeddings"], cfg["decoder_attention_heads"]
    hd = d // h
    lin = lambda o, i: rng.standard_normal((o, i)) / np.sqrt(i)
    w = {"decoder.embed_tokens.weight": rng.standard_normal((v, d))}
    for i in range(cfg["decoder_layers"]):
        p = f"decoder.layers.{i}."
        w[p + "self_attn_layer_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(d)
        w[p + "self_attn.q_proj.weight"] = lin(d, d) * 2.0
        w[p + "self_attn.k_proj.weight"] = lin(d, d) * 2.0
        if cfg["qk_bias"]:
            w[p + "self_attn.q_proj.bias"] = 0.1 * rng.standard_normal(d)
            w[p + "self_attn.k_proj.bias"] = 0.1 * rng.standard_normal(d)
        w[p + "self_attn.v_proj.weight"] = lin(d, d)
        w[p + "self_attn.out_proj.weight"] = lin(d, d)
        w[p + "self_attn.position.inv_freq"] = 10000.0 ** (-np.arange(0, hd, 2) / hd)
        w[p + "final_layer_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(d)
        w[p + "feedforward.swiglu.w12.weight"] = lin(2 * f, d)
        w[p + "feedforward.swiglu.w3.weight"] = lin(d, f)
    n_sub = cfg["structure"].count("(")
    for k in range(n_sub):
        w[f"decoder.downsamplers.{k}.to_scores.weight"] = np.zeros((1, d))
        w[f"decoder.bypasses.{k}.bypass_scale"] = 0.5 + 0.2 * rng.standard_normal(d)
    w["decoder.layer_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(d)
    if not cfg["tie_weights"]:
        w["decoder.output_projection.weight"] = lin(v, d)
    return {k: np.asarray(a, dtype=np.float32) for k, a in w.items()}


def keep_pattern(kind, pos, rng):
    n = len(pos)
    if kind == "none":
        return np.zeros(n, bool)
    if kind == "all":
        return np.ones(n, bool)
    if kind == "decode-only":
        return pos >= N_PROMPT
    assert kind == "random"
    while True:
        keep = rng.random(n) < 0.55
        if 0.4 <= keep.mean() <= 0.7 and keep[pos < N_PROMPT].sum() >= 2:
            return keep


def solve_scorers(cfg, w, ids, patterns, rng):
    """Sets each subsampler's weights so that it keeps its pattern over the full sequence."""
    for k, kind in enumerate(patterns):
        model = Model(cfg, w)
        model.forward(ids, model.new_state())
        x, pos = model.last_inputs[k]
        keep = keep_pattern(kind, pos, rng)
        target = np.where(keep, 1.0, -1.0) * rng.uniform(0.1, 1.5, len(pos))
        sol, *_ = np.linalg.lstsq(x, target, rcond=None)
        w[f"decoder.downsamplers.{k}.to_scores.weight"] = sol[None, :].astype(np.float32)
        # check with the float32-rounded weights
        model = Model(cfg, w)
        model.forward(ids, model.new_state())
        x, pos = model.last_inputs[k]
        s = x @ w[f"decoder.downsamplers.{k}.to_scores.weight"][0].astype(np.float64)
        assert np.array_equal(s > 0, keep), f"subsampler {k}: pattern not reached"
        assert np.abs(s).min() >= 0.05, f"subsampler {k}: a score is within 0.05 of 0"


def golden(cfg, w, prompt, decode, outdir):
    os.makedirs(outdir, exist_ok=True)
    full = np.concatenate([prompt, decode])
    for suffix, upstream in (("", False), ("_upstream", True)):
        model = Model(cfg, w)
        st = model.new_state()
        pre, kept = model.forward(prompt, st, upstream_nested_positions=upstream)
        steps = []
        for t in decode:
            lg, k2 = model.forward([t], st)
            steps.append(lg[0])
            for k, v in k2.items():
                kept[k] = kept.get(k, []) + v
        np.save(os.path.join(outdir, f"prefill{suffix}.npy"), pre.astype(np.float32))
        np.save(os.path.join(outdir, f"decode{suffix}.npy"), np.array(steps, dtype=np.float32))
        if not upstream:
            # self-check: one-shot over prompt+decode equals prefill then decode
            one = Model(cfg, w)
            lg_all, kept_all = one.forward(full, one.new_state())
            assert np.allclose(lg_all[len(prompt):], np.array(steps), atol=1e-10, rtol=0)
            assert np.allclose(lg_all[:len(prompt)], pre, atol=1e-10, rtol=0)
            assert all(kept_all[k] == kept[k] for k in kept_all)
            lines = ["prompt " + " ".join(map(str, prompt)), "decode " + " ".join(map(str, decode))]
            for k in sorted(kept_all):
                lines.append(f"kept {k} " + " ".join(map(str, kept_all[k])))
            with open(os.path.join(outdir, "tokens.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")


# Candidate subsample thresholds, tried in order on each side of 0.
THRESHOLDS_LOW = [-round(0.3 + 0.01 * i, 2) for i in range(31)]
THRESHOLDS_HIGH = [round(0.3 + 0.01 * i, 2) for i in range(31)]


def golden_thresholds(cfg, w, prompt, outdir):
    """Prefill logits and kept sets at one negative and one positive
    subsample threshold, each chosen so that every score the run computes is
    at least 0.02 from it (rounding cannot flip a decision). Written as
    prefill_threshold{i}.npy and threshold.txt ("threshold i T" then
    "kept i k positions...")."""
    lines = []
    for i, cands in enumerate((THRESHOLDS_LOW, THRESHOLDS_HIGH)):
        for t in cands:
            model = Model(cfg, w)
            logits, kept = model.forward(prompt, model.new_state(), threshold=t)
            margin = min((np.abs(s - t).min() for s in model.last_scores.values() if len(s)), default=1.0)
            if margin >= 0.02:
                break
        else:
            raise SystemExit(f"no threshold among {cands} is 0.02 away from every score")
        np.save(os.path.join(outdir, f"prefill_threshold{i}.npy"), logits.astype(np.float32))
        lines.append(f"threshold {i} {t!r}")
        for k in sorted(kept):
            lines.append(f"kept {i} {k} " + " ".join(map(str, kept[k])))
    with open(os.path.join(outdir, "threshold.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def make(name, outdir):
    spec = FIXTURES[name]
    seed = sum(map(ord, name)) * 7919
    rng = np.random.default_rng(seed)
    cfg = config_for(spec)
    parse_structure(cfg["structure"], cfg["decoder_layers"])
    w = random_weights(cfg, rng)
    ids = rng.integers(3, cfg["num_embeddings"], N_PROMPT + N_DECODE)
    solve_scorers(cfg, w, ids, spec["patterns"], rng)
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(cfg["num_embeddings"]), f, ensure_ascii=False)
    write_safetensors(os.path.join(d, "model.safetensors"), w)
    golden(cfg, w, ids[:N_PROMPT], ids[N_PROMPT:], os.path.join(d, "golden"))
    if spec["patterns"]:
        golden_thresholds(cfg, w, ids[:N_PROMPT], os.path.join(d, "golden"))


def main():
    outdir = sys.argv[1]
    for name in sys.argv[2:] or FIXTURES:
        make(name, outdir)


if __name__ == "__main__":
    main()
