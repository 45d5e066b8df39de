#!/usr/bin/env python3
"""Greedy generations of SmolLM2-135M-Instruct (Q4_1) by llama.cpp, as goldens for subllm.

    python3 tests/golden/make_smollm2_greedy.py assets/SmolLM2-135M-Instruct.Q4_1.gguf

Runs llama.cpp through the PyPI package llama-cpp-python with llama.cpp's defaults (F16 KV
cache, flash attention as `-fa auto` chooses on CPU), tokenizes each prompt with llama.cpp (special tokens parsed, no BOS added: SmolLM2's
vocabulary does not ask for one), and takes the argmax of the logits for 64 steps. Writes
tests/golden/smollm2_greedy.txt: per prompt, the prompt text (JSON string), llama.cpp's prompt
ids, its 64 greedy ids, and at each step the gap between the best and second-best logit; and
tests/golden/smollm2_token1_logits.f32, llama.cpp's logits for the single token 1.
"""
import json
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
]
STEPS = 64


def main():
    # flash attention on, as llama.cpp's own default (-fa auto) picks on CPU;
    # the Python binding would otherwise default to the unfused path
    llm = Llama(model_path=sys.argv[1], n_ctx=512, n_batch=512, logits_all=True, verbose=False, flash_attn=True)
    out = [f"# llama-cpp-python {llama_cpp.__version__}, greedy, {STEPS} steps"]
    for text in PROMPTS:
        llm.reset()
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.eval(ids)
        gen, gaps = [], []
        for _ in range(STEPS):
            logits = np.array(llm.scores[llm.n_tokens - 1])
            top2 = np.sort(logits)[-2:]
            t = int(np.argmax(logits))
            gen.append(t)
            gaps.append(float(top2[1] - top2[0]))
            llm.eval([t])
        out.append("prompt " + json.dumps(text))
        out.append("prompt_ids " + " ".join(map(str, ids)))
        out.append("greedy " + " ".join(map(str, gen)))
        out.append("gaps " + " ".join(f"{g:.4f}" for g in gaps))
    # position 0 (token 1, <|im_start|>) sees no other token: its logits depend only on the
    # matmuls, norms and activations, which subllm computes as llama.cpp does, bit for bit
    llm.reset()
    llm.eval([1])
    np.array(llm.scores[0], dtype=np.float32).tofile(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2_token1_logits.f32"))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2_greedy.txt")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
