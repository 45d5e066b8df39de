"""Writes tests/golden/perplexity.json: llama.cpp's `llama-perplexity` on
SmolLM2-135M-Instruct Q4_1 over Jane Austen's *Persuasion*
(tests/golden/austen-persuasion.txt, as train/data.py extracts it from
Debian's r-cran-janeaustenr; public domain), for tests/perplexity.rs.

    bench/build-llama-cpp.sh && scripts/fetch-model.sh
    python3 tests/golden/make_perplexity_golden.py
"""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "bench/.cache/llama.cpp/build/bin/llama-perplexity")
MODEL = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = "tests/golden/austen-persuasion.txt"
CASES = [
    {"ctx": 512, "batch": 512, "chunks": 8},
    {"ctx": 256, "batch": 128, "chunks": 16},
]


def run(case):
    cmd = [BIN, "-m", MODEL, "-f", TEXT, "-c", str(case["ctx"]), "-b", str(case["batch"]),
           "--chunks", str(case["chunks"]), "-t", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    chunks = [float(v) for _, v in re.findall(r"\[(\d+)\]([0-9.]+),", text)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
    n = re.search(r"tokenizes to only (\d+)|calculating perplexity over (\d+) chunks", text)
    if not m or len(chunks) != case["chunks"] or not n:
        sys.exit("unexpected llama-perplexity output:\n" + text)
    return dict(case, running=chunks, ppl=float(m.group(1)), ppl_err=float(m.group(2)))


def main():
    cases = [run(c) for c in CASES]
    golden = {
        "tool": "llama-perplexity (llama.cpp vendored in llama-cpp-python 0.3.36)",
        "model": MODEL,
        "text": TEXT,
        "cases": cases,
    }
    with open(os.path.join(ROOT, "tests/golden/perplexity.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    for c in cases:
        print(c)


if __name__ == "__main__":
    main()
