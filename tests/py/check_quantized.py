#!/usr/bin/env python3
"""Checks a file written by subllm-quantize against ggml's Python package:
every tensor whose output type `gguf` can quantize (Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1, BF16, F16) must equal gguf.quants.quantize of the input tensor's
values (gguf.quants.dequantize of the input), byte for byte; the others
must be copied unchanged when their type stayed.

    check_quantized.py IN.gguf OUT.gguf

Prints "checked N tensors" and exits 0, or names the first difference.
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf import quants

CAN = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.BF16, T.F16}

src = {t.name: t for t in GGUFReader(sys.argv[1]).tensors}
dst = GGUFReader(sys.argv[2]).tensors
checked = 0
for t in dst:
    s = src[t.name]
    if t.tensor_type == s.tensor_type:
        if bytes(t.data.tobytes()) != bytes(s.data.tobytes()):
            sys.exit(f"{t.name}: copied as {t.tensor_type.name} but changed")
        continue
    if t.tensor_type not in CAN:
        continue
    rows = int(np.prod([int(d) for d in s.shape[1:]])) if len(s.shape) > 1 else 1
    x = quants.dequantize(s.data, s.tensor_type).reshape(rows, int(s.shape[0])).astype(np.float32)
    want = quants.quantize(x, t.tensor_type)
    if want.tobytes() != t.data.tobytes():
        sys.exit(f"{t.name}: {t.tensor_type.name} bytes differ from gguf.quants.quantize")
    checked += 1
if checked == 0:
    sys.exit("nothing to check")
print(f"checked {checked} tensors")
