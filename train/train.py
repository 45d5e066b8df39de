"""Trains the small SUBLLM and its same-shape Llama twin on Austen + KJV.

    python3 train/data.py
    python3 train/train.py tokenizer                 # train/.cache/tokenizer.json
    python3 train/train.py subllm --minutes 45       # train/.cache/ckpt-subllm/
    python3 train/train.py llama  --minutes 45       # train/.cache/ckpt-llama/

Both models see the same data order, steps and seed; only the structure
string differs. The time limit stops the run at the end of a step, so the
step count is printed and written beside the checkpoint: the twin should be
given `--steps` equal to the SUBLLM's, so both have identical schedules.

Checkpoints: the SUBLLM in the official format (config.json with the
official field names, model.safetensors with `decoder.*` names); the twin in
Hugging Face Llama's (LlamaForCausalLM config, `model.layers.*`), so the
converter's two real paths are used. Weights are saved as float16: the
converted F16 GGUF then holds exactly the checkpoint, and the golden
(`golden.py`) is the framework's inference of those same values.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# SUBLLM_TRAIN_OUT moves the tokenizer, checkpoints and parameters (a dry run
# beside a real one); the corpus stays in train/.cache/text
CACHE = os.environ.get("SUBLLM_TRAIN_OUT", os.path.join(HERE, ".cache"))
TEXT = os.path.join(HERE, ".cache", "text")
sys.path.insert(0, HERE)

from data import HELD_OUT, NOVELS  # noqa: E402

VOCAB = 4096
SPECIALS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2: padding_idx, bos, eos
SEQ = 512
D, FFN, HEADS = 256, 640, 4
STRUCTURE = {"subllm": "TT(TT(TT)TT)TT", "llama": "TTTTTTTTTT"}
SEED = 1234
BAL_LO, BAL_HI = 0.59, 0.69
BAL_WEIGHT = 0.5


def train_files():
    return [os.path.join(TEXT, f"{n}.txt") for n in NOVELS if n != HELD_OUT] + [os.path.join(TEXT, "kjv.txt")]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(train_files(), trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i
    tok.save(os.path.join(CACHE, "tokenizer.json"))
    with open(os.path.join(CACHE, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>"}, f)
    print("tokenizer:", tok.get_vocab_size(), "tokens")


def encode_corpus():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(CACHE, "tokenizer.json"))
    ids = []
    for path in train_files():
        with open(path) as f:
            ids.extend(tok.encode(f.read()).ids)
        ids.append(2)  # eos between documents
    return np.asarray(ids, dtype=np.int32)


def config(kind):
    return {
        "num_embeddings": VOCAB,
        "decoder_embed_dim": D,
        "hidden_size": D,
        "decoder_ffn_embed_dim": FFN,
        "decoder_layers": STRUCTURE[kind].count("T"),
        "decoder_attention_heads": HEADS,
        "norm_name": "rmsnorm",
        "mlp_name": "swiglu",
        "qk_bias": False,
        "use_fused": False,
        "attn_type": "vanilla",
        "tokens_per_sample": SEQ,
        "n_positions": SEQ,
        "padding_idx": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "scale_token_embedding": False,
        "downsampling_factor_denominator": "0.64",
        "tie_weights": True,
        "structure": STRUCTURE[kind],
    }


def hf_llama(cfg, p):
    """The twin as a Hugging Face Llama: config and renamed tensors."""
    n = cfg["decoder_layers"]
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": D,
        "intermediate_size": FFN,
        "num_hidden_layers": n,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": VOCAB,
        "max_position_embeddings": SEQ,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float16",
    }
    t = {
        "model.embed_tokens.weight": p["decoder.embed_tokens.weight"],
        "model.norm.weight": p["decoder.layer_norm.weight"],
    }
    for i in range(n):
        a, b = f"decoder.layers.{i}.", f"model.layers.{i}."
        t[b + "input_layernorm.weight"] = p[a + "self_attn_layer_norm.weight"]
        t[b + "post_attention_layernorm.weight"] = p[a + "final_layer_norm.weight"]
        for x in ("q", "k", "v"):
            t[b + f"self_attn.{x}_proj.weight"] = p[a + f"self_attn.{x}_proj.weight"]
        t[b + "self_attn.o_proj.weight"] = p[a + "self_attn.out_proj.weight"]
        w12 = p[a + "feedforward.swiglu.w12.weight"]
        t[b + "mlp.gate_proj.weight"] = w12[:FFN]
        t[b + "mlp.up_proj.weight"] = w12[FFN:]
        t[b + "mlp.down_proj.weight"] = p[a + "feedforward.swiglu.w3.weight"]
    return hf, t


def save(kind, cfg, params, info):
    import shutil

    from safetensors.numpy import save_file

    out = os.path.join(CACHE, f"ckpt-{kind}")
    os.makedirs(out, exist_ok=True)
    p16 = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float16)) for k, v in params.items()}
    if kind == "llama":
        hf, t = hf_llama(cfg, p16)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(hf, f, indent=2)
        save_file({k: np.ascontiguousarray(v) for k, v in t.items()}, os.path.join(out, "model.safetensors"))
    else:
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        # tied, as upstream writes it: the embedding under both names
        official = dict(p16)
        official["decoder.output_projection.weight"] = p16["decoder.embed_tokens.weight"].copy()
        save_file(official, os.path.join(out, "model.safetensors"))
    # the structure-agnostic copy golden.py and the eval read
    save_file(p16, os.path.join(CACHE, f"params-{kind}.safetensors"))
    with open(os.path.join(CACHE, f"params-{kind}.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(CACHE, name), out)
    with open(os.path.join(out, "train-info.json"), "w") as f:
        json.dump(info, f, indent=2)
    print("saved", out)


def train(kind, minutes, steps, batch, lr):
    import jax
    import jax.numpy as jnp
    import optax

    from model import forward_train, init_params

    cfg = config(kind)
    data = encode_corpus()
    print(f"{kind}: {len(data)} training tokens, structure {cfg['structure']}")
    params = init_params(cfg, SEED)
    nparams = sum(int(np.prod(v.shape)) for v in params.values())
    print(f"{nparams / 1e6:.2f} M parameters")
    total = steps or 100000
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(200, total // 10), total, lr * 0.1)
    decay = {k: v.ndim == 2 and "to_scores" not in k for k, v in params.items()}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, b2=0.95, weight_decay=0.1, mask=decay))
    state = opt.init(params)

    def loss_fn(p, ids):
        logits, scores = forward_train(p, ids[:, :-1], cfg)
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))
        bal = 0.0
        fracs = []
        for s in scores:
            # The balancer: per sequence, while the fraction of positive
            # scores is outside [BAL_LO, BAL_HI], a constant push on every
            # score of that sequence towards the range (a smoothed fraction
            # would lose its gradient once the scores are far from 0).
            frac = jnp.mean((s > 0).astype(jnp.float32), axis=1)
            fracs.append(jnp.mean(frac))
            sign = (frac > BAL_HI).astype(jnp.float32) - (frac < BAL_LO).astype(jnp.float32)
            bal = bal + jnp.mean(jax.lax.stop_gradient(sign) * jnp.mean(s, axis=1))
        return ce + BAL_WEIGHT * bal, (ce, fracs)

    @jax.jit
    def step(p, st, ids):
        (loss, (ce, fracs)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, ids)
        upd, st = opt.update(g, st, p)
        return optax.apply_updates(p, upd), st, ce, fracs

    rng = np.random.default_rng(SEED)
    t0 = time.time()
    n = 0
    log = []
    while True:
        starts = rng.integers(0, len(data) - SEQ, size=batch)
        ids = np.stack([np.concatenate([[1], data[s:s + SEQ]]) for s in starts]).astype(np.int32)
        params, state, ce, fracs = step(params, state, jnp.asarray(ids))
        n += 1
        if n % 25 == 0 or n == 1:
            el = time.time() - t0
            fr = " ".join(f"{float(f):.3f}" for f in fracs)
            print(f"step {n} ce {float(ce):.4f} kept+ {fr} {el:.0f}s {n * batch * SEQ / el:.0f} tok/s", flush=True)
            log.append({"step": n, "ce": float(ce), "positive": [float(f) for f in fracs], "seconds": el})
        if (steps and n >= steps) or (not steps and time.time() - t0 > minutes * 60):
            break
    info = {
        "steps": n, "batch": batch, "seq": SEQ, "lr": lr, "seed": SEED, "schedule_steps": total,
        "seconds": time.time() - t0, "parameters": nparams, "training_tokens": len(data), "log": log,
    }
    save(kind, cfg, params, info)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["tokenizer", "subllm", "llama"])
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--steps", type=int, default=0, help="a fixed step count (also sets the schedule length)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    a = ap.parse_args()
    if a.what == "tokenizer":
        make_tokenizer()
    else:
        train(a.what, a.minutes, a.steps, a.batch, a.lr)


if __name__ == "__main__":
    main()
