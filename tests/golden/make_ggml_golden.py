#!/usr/bin/env python3
"""Writes tests/golden/ggml/: llama.cpp's own reference quantizers and dequantizers
applied to fixed inputs, for the quantization types subllm implements.

Needs the PyPI package llama-cpp-python (it ships ggml as a shared library). The outputs
are committed, so CI does not need to build llama.cpp; rerun this script to regenerate:

    python3 tests/golden/make_ggml_golden.py

Files: input.f32 (ROWS x COLS little-endian f32), and per type <TYPE>.q (the quantized
bytes from ggml's `from_float_ref`, i.e. quantize_row_*_ref) and <TYPE>.deq.f32 (ggml's
`to_float` of those bytes), plus VERSION naming the llama.cpp build used. For the 32-element
types, <TYPE>.act and <TYPE>.dot.f32 hold an activation row quantized by ggml's CPU backend and
its x86 dot products with every weight row; likewise for Q4_K, Q5_K and Q6_K (Q8_K activations).
"""
import ctypes
import glob
import os

import numpy as np
import llama_cpp

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ggml")
ROWS, COLS = 12, 512
TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q8_1": 9,
         "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "Q8_K": 15, "BF16": 30}


class TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


ROW_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def inputs():
    rng = np.random.default_rng(20261123)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[1] *= 1e-4                                        # tiny values
    x[2, :256] = 0.0                                    # an all-zero super-block
    x[2, 256:] = 0.75                                   # a constant super-block
    x[3] = -np.abs(x[3])                                # all negative
    x[4] = np.abs(x[4]) + 1.0                           # all positive, offset
    x[5] = rng.standard_t(2, COLS).astype(np.float32)   # heavy tails
    x[6, ::37] = 100.0                                  # outliers
    x[7] = np.round(x[7] * 8) / 8                       # values on a coarse grid (ties)
    x[8] = (x[8] ** 3).astype(np.float32)               # skewed magnitudes
    x[9, :16] = 1e-20                                   # denormal-ish scale
    x[10] *= 1e4                                        # large values
    x[11, 100:120] = -0.0
    return np.ascontiguousarray(x)


class CpuTraits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
DOT_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}


def write_dots(libdir, x):
    """<TYPE>.dot.f32: llama.cpp's CPU dot product (x86 build) of every weight row of <TYPE>.q with
    row 0 of the inputs quantized by the CPU backend's activation quantizer (<TYPE>.act)."""
    cpu = ctypes.CDLL(glob.glob(os.path.join(libdir, "libggml-cpu.so*"))[0], mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(CpuTraits)
    cpu.ggml_cpu_init()
    act_row = np.ascontiguousarray(x[5] * 0.3)  # heavy-tailed activations
    for name, tid in DOT_TYPES.items():
        tr = cpu.ggml_get_type_traits_cpu(tid).contents
        act = cpu.ggml_get_type_traits_cpu(tr.vec_dot_type).contents
        a_block, a_size = {8: (32, 34), 9: (32, 36), 15: (256, 292)}[tr.vec_dot_type]
        xq = np.zeros(COLS // a_block * a_size, dtype=np.uint8)
        ROW_FN(act.from_float)(act_row.ctypes.data, xq.ctypes.data, COLS)
        xq.tofile(os.path.join(OUT, f"{name}.act"))
        w = np.fromfile(os.path.join(OUT, f"{name}.q"), dtype=np.uint8).reshape(ROWS, -1)
        dots = np.zeros(ROWS, dtype=np.float32)
        for r in range(ROWS):
            out = ctypes.c_float(0)
            row = np.ascontiguousarray(w[r])
            VEC_DOT(tr.vec_dot)(COLS, ctypes.byref(out), 0, row.ctypes.data, 0, xq.ctypes.data, 0, 1)
            dots[r] = out.value
        dots.tofile(os.path.join(OUT, f"{name}.dot.f32"))


def main():
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(glob.glob(os.path.join(libdir, "libggml-base.so*"))[0])
    lib.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    os.makedirs(OUT, exist_ok=True)
    x = inputs()
    x.tofile(os.path.join(OUT, "input.f32"))
    for name, tid in TYPES.items():
        tr = lib.ggml_get_type_traits(tid).contents
        assert tr.type_name.decode().upper() == name, (tr.type_name, name)
        n = x.size
        from_ref, to_float = tr.from_float_ref, tr.to_float
        if name == "Q8_K":  # not in ggml-base's traits table, but exported
            from_ref = ctypes.cast(lib.quantize_row_q8_K_ref, ctypes.c_void_p).value
            to_float = ctypes.cast(lib.dequantize_row_q8_K, ctypes.c_void_p).value
        if not from_ref:
            print(f"{name}: ggml has no reference quantizer, skipped")
            continue
        q = np.zeros(n // tr.blck_size * tr.type_size, dtype=np.uint8)
        for r in range(ROWS):  # row by row, as ggml quantizes tensors
            off = r * COLS // tr.blck_size * tr.type_size
            ROW_FN(from_ref)(x[r].ctypes.data, q[off:].ctypes.data, COLS)
        q.tofile(os.path.join(OUT, f"{name}.q"))
        if to_float:
            y = np.zeros(n, dtype=np.float32)
            ROW_FN(to_float)(q.ctypes.data, y.ctypes.data, n)
            y.tofile(os.path.join(OUT, f"{name}.deq.f32"))
    write_dots(libdir, x)
    with open(os.path.join(OUT, "VERSION"), "w") as f:
        f.write(f"llama-cpp-python {llama_cpp.__version__}\n")


if __name__ == "__main__":
    main()
