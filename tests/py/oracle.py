#!/usr/bin/env python3
"""Test oracle built on ggml's own Python package `gguf` (and NumPy).

Used by the Rust integration tests in tests/gguf_oracle.rs:

  oracle.py write-reference OUTDIR   a GGUF written by gguf.GGUFWriter with every metadata
                                     value type and tensors of every supported type, plus
                                     the random rows, gguf's quantized bytes for them and
                                     gguf's dequantization of every tensor
  oracle.py describe FILE [--no-data]  a canonical text description of FILE as gguf.GGUFReader
                                     sees it (metadata with exact values, tensor table, data)
  oracle.py dequantize FILE OUTDIR   every tensor of FILE dequantized by gguf, as raw f32 files
  oracle.py npy-info FILE.npy        dtype, shape and exact float64 sum of an array, via NumPy
  oracle.py quant-sizes              gguf's table of block sizes

The description format is shared with the Rust side (tests/common/mod.rs), so the two readers
can be compared line by line: floats are written as the hex of their bits, strings as the hex
of their UTF-8 bytes, tensor data as the hex of its bytes.
"""
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V

# Types gguf can quantize (the k-quants it can only dequantize).
QUANTIZABLE = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
# Types whose bytes the reference file holds as random but valid blocks.
RAW_ONLY = ["Q4_K", "Q5_K", "Q6_K", "Q8_K"]
ROWS, COLS = 4, 512


def rows(seed=1234):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[1] *= 1e-3            # small values
    x[2, :32] = 0.0         # an all-zero block
    x[3, 32:64] = 7.25      # a constant block
    x[3, 64] = -40.0        # an outlier
    return x


def random_kquant_blocks(name, n_blocks, rng):
    """Random bytes with the f16/f32 scale fields set to sane finite values."""
    qt = Q[name]
    block, size = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    def f16(vals):
        return np.asarray(vals, dtype=np.float16).view(np.uint8).reshape(n_blocks, -1)
    if name in ("Q4_K", "Q5_K"):      # d, dmin at the start
        raw[:, 0:4] = f16(rng.uniform(0.001, 0.1, (n_blocks, 2)))
    elif name == "Q6_K":              # d at the end
        raw[:, size - 2:] = f16(rng.uniform(0.001, 0.1, (n_blocks, 1)))
    elif name == "Q8_K":              # f32 d at the start
        raw[:, 0:4] = rng.uniform(0.001, 0.1, (n_blocks, 1)).astype(np.float32).view(np.uint8).reshape(n_blocks, 4)
    return raw


def write_reference(outdir):
    os.makedirs(outdir, exist_ok=True)
    x = rows()
    np.save(os.path.join(outdir, "rows.npy"), x)
    w = gguf.GGUFWriter(os.path.join(outdir, "reference.gguf"), arch="subllm-test")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 3.14159)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -2.718281828459045)
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "héllo wörld ✓")
    w.add_string("test.empty_string", "")
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_f32", [0.5, -1.25])
    w.add_array("test.array_str", ["a", "bc", "", "ü"])
    w.add_array("test.array_nested", [[1, 2], [3]])
    rng = np.random.default_rng(99)
    for name in QUANTIZABLE:
        q = gguf.quants.quantize(x, Q[name])
        q.tofile(os.path.join(outdir, f"quant_{name}.bin"))
        w.add_tensor(f"t.{name}", q, raw_dtype=Q[name])
    for name in RAW_ONLY:
        raw = random_kquant_blocks(name, ROWS * COLS // 256, rng)
        w.add_tensor(f"t.{name}", raw.reshape(ROWS, -1), raw_dtype=Q[name])
    w.add_tensor("t.3d", np.arange(2 * 3 * 32, dtype=np.float32).reshape(2, 3, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # gguf's own dequantization of every tensor of the file it wrote
    r = gguf.GGUFReader(os.path.join(outdir, "reference.gguf"))
    for t in r.tensors:
        if Q(t.tensor_type) == Q.Q8_K:
            continue  # gguf has no Q8_K dequantizer; llama.cpp's goldens cover it
        deq = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        np.save(os.path.join(outdir, f"expected_{t.name}.npy"), deq.reshape(-1))


def fmt_scalar(vtype, v):
    if vtype == V.FLOAT32:
        return struct.pack("<f", float(v)).hex()
    if vtype == V.FLOAT64:
        return struct.pack("<d", float(v)).hex()
    if vtype == V.BOOL:
        return "1" if bool(v) else "0"
    if vtype == V.STRING:
        return bytes(v).hex()
    return str(int(v))


def fmt_value(field):
    types = field.types
    if types[0] != V.ARRAY:
        part = field.parts[field.data[0]]
        return V(types[0]).name + ":" + fmt_scalar(types[0], part if types[0] == V.STRING else part[0])
    # arrays: gguf's reader keeps element parts; nested arrays are not decoded by it, so walk parts
    return fmt_array_parts(field, types)


def fmt_array_parts(field, types):
    # parts layout after key: [type][elem_type][count][elements...] for flat arrays
    etype = types[1] if len(types) > 1 else None
    if etype is None:
        # empty array: read elem type from parts
        etype = int(field.parts[3][0])
        return f"ARRAY[{V(etype).name}]:"
    if etype == V.ARRAY:
        return "ARRAY[ARRAY]:" + ",".join(fmt_nested(field))
    items = []
    for di in field.data:
        part = field.parts[di]
        items.append(fmt_scalar(etype, part if etype == V.STRING else part[0]))
    return f"ARRAY[{V(etype).name}]:" + ",".join(items)


def fmt_nested(field):
    # decode nested arrays straight from the bytes of the field's parts
    blob = b"".join(bytes(p.tobytes()) for p in field.parts[3:])
    pos = 0
    count = int(field.parts[4][0])
    out = []
    pos = 12  # skip elem type (4) + count (8) of the outer array
    for _ in range(count):
        s, pos = fmt_nested_one(blob, pos)
        out.append(s)
    return out


def fmt_nested_one(blob, pos):
    etype, count = struct.unpack_from("<IQ", blob, pos)
    pos += 12
    sizes = {V.UINT8: "B", V.INT8: "b", V.UINT16: "H", V.INT16: "h", V.UINT32: "I", V.INT32: "i",
             V.FLOAT32: "f", V.BOOL: "?", V.UINT64: "Q", V.INT64: "q", V.FLOAT64: "d"}
    items = []
    for _ in range(count):
        if etype == V.STRING:
            (n,) = struct.unpack_from("<Q", blob, pos)
            items.append(blob[pos + 8:pos + 8 + n].hex())
            pos += 8 + n
        elif etype == V.ARRAY:
            s, pos = fmt_nested_one(blob, pos)
            items.append(s)
        else:
            c = sizes[V(etype)]
            (v,) = struct.unpack_from("<" + c, blob, pos)
            pos += struct.calcsize(c)
            items.append(fmt_scalar(V(etype), v))
    return "[" + V(etype).name + ";" + ",".join(items) + "]", pos


def describe(path, with_data=True):
    r = gguf.GGUFReader(path)
    lines = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's pseudo-fields for the header
        lines.append(f"kv {name} {fmt_value(field)}")
    for t in r.tensors:
        dims = ",".join(str(int(d)) for d in t.shape)
        data = np.ascontiguousarray(t.data).view(np.uint8).tobytes().hex() if with_data else "-"
        lines.append(f"tensor {t.name} {Q(t.tensor_type).name} {dims} {int(t.data_offset) - int(r.data_offset)} {data}")
    return "\n".join(lines) + "\n"


def dequantize_all(path, outdir):
    os.makedirs(outdir, exist_ok=True)
    r = gguf.GGUFReader(path)
    for i, t in enumerate(r.tensors):
        deq = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        deq.reshape(-1).tofile(os.path.join(outdir, f"{i:05d}.f32"))


def main():
    cmd = sys.argv[1]
    if cmd == "write-reference":
        write_reference(sys.argv[2])
    elif cmd == "describe":
        sys.stdout.write(describe(sys.argv[2], with_data="--no-data" not in sys.argv))
    elif cmd == "dequantize":
        dequantize_all(sys.argv[2], sys.argv[3])
    elif cmd == "npy-info":
        a = np.load(sys.argv[2])
        print(a.dtype, ",".join(str(d) for d in a.shape), struct.pack("<d", float(a.astype(np.float64).sum())).hex())
    elif cmd == "quant-sizes":
        for qt, (block, size) in gguf.GGML_QUANT_SIZES.items():
            print(qt.name, int(qt), block, size)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
