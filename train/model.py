"""SUBLLM and its Llama twin in JAX: the model of ../shared/docs/subllm-inference.md
(section 12's engine semantics: absolute RoPE positions at every level) plus
the training mode.

Parameters are a flat dict under the official checkpoint names
(`decoder.layers.{i}.self_attn.q_proj.weight`, ...), so saving them is writing
the dict. The twin uses the same names and a structure string without
parentheses; `train.py` renames its tensors to Hugging Face Llama's when it
saves it.

Two modes:
- training (`forward_train`, batched, static shapes): at each `(` the top
  k = ceil(n / f) tokens by score are kept (f = 1 / 0.64), in position order;
  the upsampler weights are the clamped scores, as at inference, so the scorer
  learns through the blend. The scores are returned for the balancing term.
- inference (`forward_infer`, one sequence): a token is kept iff its score is
  above the threshold (0 is the trained behaviour), the engine's semantics.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-5
ROPE_BASE = 10000.0


def parse_structure(structure):
    """Per character: ("T", layer) / ("(", downsampler) / (")", bypass)."""
    out, stack, nt, nopen, nclose = [], [], 0, 0, 0
    for c in structure:
        if c == "T":
            out.append(("T", nt))
            nt += 1
        elif c == "(":
            out.append(("(", nopen))
            stack.append(nopen)
            nopen += 1
        elif c == ")":
            if not stack:
                raise ValueError("unbalanced structure")
            stack.pop()
            out.append((")", nclose))
            nclose += 1
        else:
            raise ValueError(f"bad structure character {c!r}")
    if stack:
        raise ValueError("unbalanced structure")
    return out, nt, nopen


def init_params(cfg, seed):
    d, f, v = cfg["decoder_embed_dim"], cfg["decoder_ffn_embed_dim"], cfg["num_embeddings"]
    _, n_layers, n_sub = parse_structure(cfg["structure"])
    rng = np.random.default_rng(seed)
    std = 0.02
    # GPT-2 style: residual output projections scaled by depth
    out_std = std / math.sqrt(2 * n_layers)

    def normal(shape, s):
        return rng.normal(0.0, s, size=shape).astype(np.float32)

    p = {"decoder.embed_tokens.weight": normal((v, d), std)}
    for i in range(n_layers):
        pre = f"decoder.layers.{i}."
        p[pre + "self_attn_layer_norm.weight"] = np.ones(d, np.float32)
        p[pre + "final_layer_norm.weight"] = np.ones(d, np.float32)
        for n in ("q_proj", "k_proj", "v_proj"):
            p[pre + f"self_attn.{n}.weight"] = normal((d, d), std)
        p[pre + "self_attn.out_proj.weight"] = normal((d, d), out_std)
        p[pre + "feedforward.swiglu.w12.weight"] = normal((2 * f, d), std)
        p[pre + "feedforward.swiglu.w3.weight"] = normal((d, f), out_std)
    for k in range(n_sub):
        # small positive start: every token kept with a small weight
        p[f"decoder.downsamplers.{k}.to_scores.weight"] = normal((1, d), std)
        p[f"decoder.bypasses.{k}.bypass_scale"] = np.full(d, 0.5, np.float32)
    p["decoder.layer_norm.weight"] = np.ones(d, np.float32)
    if not cfg["tie_weights"]:
        p["decoder.output_projection.weight"] = normal((v, d), std)
    return {k: jnp.asarray(x) for k, x in p.items()}


def rmsnorm(x, g):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + EPS) * g


def rope(x, pos):
    """NeoX (rotate-half) rotation of x (B, n, H, hd) at positions pos (B, n)."""
    hd = x.shape[-1]
    inv = ROPE_BASE ** (-jnp.arange(0, hd // 2, dtype=jnp.float32) * 2.0 / hd)
    ang = pos[..., None].astype(jnp.float32) * inv
    cos = jnp.cos(ang)[:, :, None, :]
    sin = jnp.sin(ang)[:, :, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def block(p, i, x, pos, heads):
    """One pre-norm block on rows x (B, n, d) in position order (causal)."""
    pre = f"decoder.layers.{i}."
    b, n, d = x.shape
    hd = d // heads
    h = rmsnorm(x, p[pre + "self_attn_layer_norm.weight"])
    q = (h @ p[pre + "self_attn.q_proj.weight"].T).reshape(b, n, heads, hd)
    k = (h @ p[pre + "self_attn.k_proj.weight"].T).reshape(b, n, heads, hd)
    v = (h @ p[pre + "self_attn.v_proj.weight"].T).reshape(b, n, heads, hd)
    q = rope(q, pos) * (hd ** -0.5)
    k = rope(k, pos)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    mask = jnp.tril(jnp.ones((n, n), dtype=bool))
    s = jnp.where(mask, s, -jnp.inf)
    a = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, n, d)
    x = x + o @ p[pre + "self_attn.out_proj.weight"].T
    h = rmsnorm(x, p[pre + "final_layer_norm.weight"])
    xx = h @ p[pre + "feedforward.swiglu.w12.weight"].T
    f = xx.shape[-1] // 2
    x = x + (jax.nn.silu(xx[..., :f]) * xx[..., f:]) @ p[pre + "feedforward.swiglu.w3.weight"].T
    return x


def _head(p, x):
    out = p.get("decoder.output_projection.weight", p["decoder.embed_tokens.weight"])
    return rmsnorm(x, p["decoder.layer_norm.weight"]) @ out.T


def forward_train(p, ids, cfg):
    """Logits (B, n, V) and the scores at each `(` (list of (B, m))."""
    plan, _, _ = parse_structure(cfg["structure"])
    factor = 1.0 / float(cfg["downsampling_factor_denominator"])
    heads = cfg["decoder_attention_heads"]
    b, n = ids.shape
    x = p["decoder.embed_tokens.weight"][ids]
    pos = jnp.broadcast_to(jnp.arange(n), (b, n))
    stack, scores = [], []
    for c, i in plan:
        if c == "T":
            x = block(p, i, x, pos, heads)
        elif c == "(":
            s = (x @ p[f"decoder.downsamplers.{i}.to_scores.weight"].T)[..., 0]
            scores.append(s)
            m = s.shape[1]
            keep = int(math.ceil(m / factor))
            _, idx = jax.lax.top_k(s, keep)
            idx = jnp.sort(idx, axis=1)
            a = jnp.clip(jnp.take_along_axis(s, idx, axis=1), 0.0, 1.0)
            stack.append((x, idx, a, pos))
            x = jnp.take_along_axis(x, idx[..., None], axis=1)
            pos = jnp.take_along_axis(pos, idx, axis=1)
        else:
            big, idx, a, pos = stack.pop()
            beta = p[f"decoder.bypasses.{i}.bypass_scale"]
            small = jnp.take_along_axis(big, idx[..., None], axis=1)
            delta = a[..., None] * beta * (x - small)
            rows = jnp.arange(b)[:, None]
            x = big.at[rows, idx].add(delta)
    return _head(p, x), scores


def forward_infer(p, ids, cfg, threshold=0.0):
    """One sequence, the engine's semantics: logits (n, V), and per `(` the
    kept positions (absolute) and the scores of the rows it saw."""
    plan, _, _ = parse_structure(cfg["structure"])
    heads = cfg["decoder_attention_heads"]
    p = {k: np.asarray(v) for k, v in p.items()}
    ids = np.asarray(ids)
    n = len(ids)
    x = jnp.asarray(p["decoder.embed_tokens.weight"][ids])[None]
    pos = np.arange(n)
    stack, kept, seen = [], [], []
    for c, i in plan:
        if c == "T":
            if x.shape[1]:
                x = block(p, i, x, jnp.asarray(pos)[None], heads)
        elif c == "(":
            s = np.asarray((x @ p[f"decoder.downsamplers.{i}.to_scores.weight"].T)[0, :, 0])
            sel = np.nonzero(s > threshold)[0]
            a = np.clip(s[sel], 0.0, 1.0).astype(np.float32)
            stack.append((x, sel, a, pos))
            kept.append(pos[sel].tolist())
            seen.append(s.tolist())
            x = x[:, sel]
            pos = pos[sel]
        else:
            big, sel, a, pos = stack.pop()
            beta = p[f"decoder.bypasses.{i}.bypass_scale"]
            if len(sel):
                small = big[:, sel]
                x = big.at[:, sel].add(jnp.asarray(a)[None, :, None] * beta * (x - small))
            else:
                x = big
    return np.asarray(_head(p, x)[0]), kept, seen
