"""The training framework's own inference of the trained checkpoints, for
tests/trained.rs: JAX (`model.forward_infer`, threshold 0, the engine's
semantics) on a fixed text from the held-out novel.

    python3 train/golden.py [subllm] [llama]   # writes trained/golden/<kind>.{json,f32}

Per model: `<kind>.json` holds the text, its token ids (from the Hugging Face
`tokenizers` package, which the engine must reproduce), the kept positions
of each region and the smallest |score| seen (how far the closest decision
is from flipping); `<kind>.f32` the logits of every position, float32,
row-major [n_tokens, n_vocab].
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.environ.get("SUBLLM_TRAIN_OUT", os.path.join(HERE, ".cache"))
OUT = os.environ.get("SUBLLM_GOLDEN_OUT", os.path.join(ROOT, "trained", "golden"))
sys.path.insert(0, HERE)

# the opening of the held-out novel, as train/data.py writes it
TEXT = (
    "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, "
    "never took up any book but the Baronetage"
)


def main():
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from model import forward_infer

    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(CACHE, "tokenizer.json"))
    ids = [1] + tok.encode(TEXT).ids  # BOS, as the GGUF's add_bos_token says
    for kind in sys.argv[1:] or ("subllm", "llama"):
        with open(os.path.join(CACHE, f"params-{kind}.json")) as f:
            cfg = json.load(f)
        # the checkpoint's float16 values, computed with in float32
        p = {k: v.astype(np.float32) for k, v in load_file(os.path.join(CACHE, f"params-{kind}.safetensors")).items()}
        logits, kept, scores = forward_infer(p, ids, cfg, threshold=0.0)
        margin = min((float(np.abs(np.asarray(s)).min()) for s in scores if len(s)), default=None)
        with open(os.path.join(OUT, f"{kind}.json"), "w") as f:
            json.dump({"text": TEXT, "ids": ids, "kept": kept, "min_abs_score": margin,
                       "n_vocab": int(logits.shape[1])}, f, indent=1)
            f.write("\n")
        logits.astype("<f4").tofile(os.path.join(OUT, f"{kind}.f32"))
        print(kind, len(ids), "tokens; kept", [len(k) for k in kept], "min |score|", margin)


if __name__ == "__main__":
    main()
