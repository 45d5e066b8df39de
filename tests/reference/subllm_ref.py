#!/usr/bin/env python3
"""Float64 NumPy reference of SUBLLM (and Llama, a SUBLLM without regions) as subllm's engine
defines it: ../shared/docs/subllm-inference.md, section 12.

Reads official checkpoint names (`decoder.*`) and config fields. Written from the document,
independently of the Rust engine: it keeps the official rotate-half RoPE on unpermuted weights
(the engine permutes q/k at conversion and rotates interleaved pairs), plain MHA, and per-block
caches of post-RoPE keys and raw values.

    model = Model(config_dict, {name: np.ndarray})
    state = model.new_state()
    logits, kept = model.forward(ids, state)                       # any n >= 1, any cache state
    logits, kept = model.forward(ids, state, upstream_nested_positions=True)

`kept` maps each subsampler index (opening order) to the absolute positions it kept in that call.
"""
import numpy as np

EPS = 1e-5
ROPE_BASE = 10000.0


def parse_structure(structure, n_layers):
    """Returns ops: ('T', layer, level) | ('(', down) | (')', bypass, down) and the level count."""
    ops, stack = [], []
    n_t = n_open = n_close = 0
    for c in structure:
        if c == "T":
            ops.append(("T", n_t, len(stack)))
            n_t += 1
        elif c == "(":
            ops.append(("(", n_open))
            stack.append(n_open)
            n_open += 1
        elif c == ")":
            if not stack:
                raise ValueError("unbalanced ')' in structure")
            ops.append((")", n_close, stack.pop()))
            n_close += 1
        else:
            raise ValueError(f"bad structure character {c!r}")
    if stack:
        raise ValueError("unbalanced '(' in structure")
    if n_t != n_layers:
        raise ValueError(f"structure has {n_t} T, config has {n_layers} layers")
    return ops


def rms_norm(x, g):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS) * g


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_rotate_half(x, pos, n_heads):
    """x: (m, n_heads*hd); pos: (m,) absolute positions. NeoX / rotate-half convention."""
    m, dim = x.shape
    hd = dim // n_heads
    inv_freq = ROPE_BASE ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)   # hd/2
    theta = np.asarray(pos, dtype=np.float64)[:, None] * inv_freq[None, :]  # (m, hd/2)
    cos = np.concatenate([np.cos(theta)] * 2, axis=1)[:, None, :]
    sin = np.concatenate([np.sin(theta)] * 2, axis=1)[:, None, :]
    xh = x.reshape(m, n_heads, hd)
    rot = np.concatenate([-xh[..., hd // 2:], xh[..., :hd // 2]], axis=-1)
    return (xh * cos + rot * sin).reshape(m, dim)


class Model:
    def __init__(self, config, weights):
        self.cfg = config
        self.d = int(config["decoder_embed_dim"])
        self.h = int(config["decoder_attention_heads"])
        self.f = int(config["decoder_ffn_embed_dim"])
        self.n_layers = int(config["decoder_layers"])
        self.ops = parse_structure(config["structure"], self.n_layers)
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        if "decoder.output_projection.weight" not in self.w:
            self.w["decoder.output_projection.weight"] = self.w["decoder.embed_tokens.weight"]

    def new_state(self):
        return {"n_past": 0, "k": [np.zeros((0, self.d)) for _ in range(self.n_layers)],
                "v": [np.zeros((0, self.d)) for _ in range(self.n_layers)]}

    def block(self, i, x, pos, state):
        w = lambda n: self.w[f"decoder.layers.{i}.{n}"]
        hd = self.d // self.h
        h = rms_norm(x, w("self_attn_layer_norm.weight"))
        q = h @ w("self_attn.q_proj.weight").T
        k = h @ w("self_attn.k_proj.weight").T
        v = h @ w("self_attn.v_proj.weight").T
        if f"decoder.layers.{i}.self_attn.q_proj.bias" in self.w:
            q = q + w("self_attn.q_proj.bias")
            k = k + w("self_attn.k_proj.bias")
        q = rope_rotate_half(q, pos, self.h) * hd ** -0.5
        k = rope_rotate_half(k, pos, self.h)
        n_old = state["k"][i].shape[0]
        K = np.concatenate([state["k"][i], k])
        V = np.concatenate([state["v"][i], v])
        state["k"][i], state["v"][i] = K, V
        m = x.shape[0]
        out = np.zeros_like(q)
        for j in range(self.h):
            sl = slice(j * hd, (j + 1) * hd)
            s = q[:, sl] @ K[:, sl].T                                 # (m, n_old + m)
            mask = np.arange(n_old + m)[None, :] > (n_old + np.arange(m))[:, None]
            s = np.where(mask, -np.inf, s)
            s = s - s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            out[:, sl] = p @ V[:, sl]
        x = x + out @ w("self_attn.out_proj.weight").T
        h = rms_norm(x, w("final_layer_norm.weight"))
        xx = h @ w("feedforward.swiglu.w12.weight").T
        x = x + (silu(xx[:, :self.f]) * xx[:, self.f:]) @ w("feedforward.swiglu.w3.weight").T
        return x

    def forward(self, ids, state, upstream_nested_positions=False, threshold=0.0):
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        p0 = state["n_past"]
        first_prefill = p0 == 0 and n >= 2
        x = self.w["decoder.embed_tokens.weight"][ids]
        pos = np.arange(p0, p0 + n)          # absolute positions of the current rows
        rope_pos = pos.copy()                # positions given to RoPE (differ only upstream)
        stack, kept = [], {}
        self.last_inputs = {}   # subsampler -> (rows it scored, their positions), for fixture design
        self.last_scores = {}   # subsampler -> the scores it computed
        for op in self.ops:
            if op[0] == "T":
                if x.shape[0] > 0:
                    x = self.block(op[1], x, rope_pos, state)
            elif op[0] == "(":
                k = op[1]
                self.last_inputs[k] = (x.copy(), pos.copy())
                s = x @ self.w[f"decoder.downsamplers.{k}.to_scores.weight"][0]
                self.last_scores[k] = s
                keep = np.nonzero(s > threshold)[0]   # threshold 0: the trained behaviour
                a = np.clip(s[keep], 0.0, 1.0)
                stack.append((x, keep, a, pos, rope_pos))
                kept[k] = pos[keep].tolist()
                level = len(stack)
                x, pos = x[keep], pos[keep]
                if upstream_nested_positions and first_prefill and level >= 2:
                    rope_pos = keep.astype(np.int64)   # index within the parent level's rows
                else:
                    rope_pos = pos
            else:
                b = op[1]
                X, keep, a, pos, rope_pos = stack.pop()
                beta = self.w[f"decoder.bypasses.{b}.bypass_scale"]
                Z = X.copy()
                Z[keep] = X[keep] + a[:, None] * beta[None, :] * (x - X[keep])
                x = Z
        state["n_past"] = p0 + n
        logits = rms_norm(x, self.w["decoder.layer_norm.weight"]) @ self.w["decoder.output_projection.weight"].T
        return logits, kept
