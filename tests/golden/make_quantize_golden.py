#!/usr/bin/env python3
"""Writes tests/golden/quantize.json: the type and a 64-bit FNV-1a hash of
every tensor llama.cpp's `llama-quantize` writes, for

- a synthetic F16 Llama (8 blocks, width 256, GQA 8/2, FFN 320 so that
  ffn_down rows fall back, an untied output), made by
  `subllm-convert --synthetic` (deterministic from its seed), quantized to
  every type subllm-quantize offers;
- SmolLM2-135M-Instruct Q4_1 (tied embeddings, width 576: fallbacks)
  requantized (--allow-requantize) to Q4_K_M and Q8_0;
- the synthetic model with --pure, --leave-output-tensor and
  --output-tensor-type / --token-embedding-type;
- the synthetic model with --imatrix tests/golden/imatrix-synthetic.gguf
  (an importance matrix in llama-imatrix's GGUF format, written here from
  a fixed seed: every matrix but blk.3.attn_q.weight, which goes without)
  for every type whose quantizer takes weights, and Q8_0 (whose does not).

The golden is committed, so the tests (quantize/tests/llama_cpp_golden.rs)
need no llama.cpp. To regenerate, build llama.cpp once
(bench/build-llama-cpp.sh) and run from the repository root after
`cargo build --release`:

    python3 tests/golden/make_quantize_golden.py
"""
import json
import os

import numpy as np
import subprocess
import sys
import tempfile

from gguf import GGUFReader, GGUFWriter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LQ = os.path.join(ROOT, "bench/.cache/llama.cpp/build/bin/llama-quantize")
CONVERT = os.path.join(ROOT, "target/release/subllm-convert")
SYNTH = "tiny-llama,d=256,layers=8,heads=8,kv_heads=2,ff=320,vocab=300,ctx=64,seed=5"
SMOL = os.path.join(ROOT, "assets/SmolLM2-135M-Instruct.Q4_1.gguf")
IMATRIX = "tests/golden/imatrix-synthetic.gguf"
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M",
         "Q6_K", "F16", "BF16", "F32"]


def fnv1a64(b):
    """64-bit FNV-1a, as quantize/tests/llama_cpp_golden.rs computes it."""
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def describe(path):
    r = GGUFReader(path)
    return {t.name: [t.tensor_type.name, "%016x" % fnv1a64(t.data.tobytes())] for t in r.tensors}


def make_imatrix(f16, out):
    """An imatrix for the matrices of `f16` as llama-imatrix lays it out:
    NAME.in_sum2 (summed squares, F32, one row) and NAME.counts (F32, one
    expert), with its metadata; values from a fixed seed."""
    rng = np.random.RandomState(20261202)
    w = GGUFWriter(out, "imatrix")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["golden-synthetic"])
    w.add_uint32("imatrix.chunk_count", 7)
    w.add_uint32("imatrix.chunk_size", 512)
    for t in GGUFReader(f16).tensors:
        if len(t.shape) < 2 or t.name == "blk.3.attn_q.weight":
            continue
        count = 7 * 512
        imp = rng.uniform(0.01, 4.0, int(t.shape[0])).astype(np.float32)
        w.add_tensor(t.name + ".in_sum2", (imp * count).astype(np.float32))
        w.add_tensor(t.name + ".counts", np.array([count], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src, ty, flags, d):
    out = os.path.join(d, "out.gguf")
    subprocess.run([LQ, *flags, src, out, ty, "2"], check=True, capture_output=True, cwd=ROOT)
    return describe(out)


def main():
    if not os.path.exists(LQ):
        sys.exit(f"{LQ} is missing: run bench/build-llama-cpp.sh")
    golden = {"synthetic": SYNTH, "cases": []}
    with tempfile.TemporaryDirectory() as d:
        f16 = os.path.join(d, "f16.gguf")
        subprocess.run([CONVERT, "-q", "--synthetic", SYNTH, "--outtype", "f16", "-o", f16], check=True,
                       capture_output=True)
        for ty in TYPES:
            golden["cases"].append({"input": "synthetic", "type": ty, "flags": [],
                                    "tensors": quantize(f16, ty, [], d)})
        for flags, ty in [(["--pure"], "Q4_K_M"), (["--leave-output-tensor"], "Q5_K_M"),
                          (["--output-tensor-type", "q8_0", "--token-embedding-type", "q4_k"], "Q4_K_S"),
                          (["--pure"], "Q6_K")]:
            golden["cases"].append({"input": "synthetic", "type": ty, "flags": flags,
                                    "tensors": quantize(f16, ty, flags, d)})
        make_imatrix(f16, os.path.join(ROOT, IMATRIX))
        for ty in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
                   "Q8_0"]:
            flags = ["--imatrix", IMATRIX]
            golden["cases"].append({"input": "synthetic", "type": ty, "flags": flags,
                                    "tensors": quantize(f16, ty, flags, d)})
        for ty in ["Q4_K_M", "Q8_0"]:
            golden["cases"].append({"input": "smollm2", "type": ty, "flags": ["--allow-requantize"],
                                    "tensors": quantize(SMOL, ty, ["--allow-requantize"], d)})
    golden["llama_cpp"] = "llama-quantize built from the llama-cpp-python 0.3.36 sdist (bench/build-llama-cpp.sh)"
    with open(os.path.join(ROOT, "tests/golden/quantize.json"), "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
