#!/usr/bin/env python3
"""libsubllm from Python with ctypes: load a model, generate greedily, print.

    cargo build --release -p subllm-capi
    python3 examples/python/simple.py assets/SmolLM2-135M-Instruct.Q4_1.gguf "The capital of France is" 32

SUBLLM_LIB names the library (default: target/release/libsubllm.so).
"""
import ctypes as C
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
lib = C.CDLL(os.environ.get("SUBLLM_LIB", os.path.join(ROOT, "target", "release", "libsubllm.so")))


class SamplerParams(C.Structure):
    _fields_ = [("temperature", C.c_float), ("top_k", C.c_uint32), ("top_p", C.c_float),
                ("min_p", C.c_float), ("repeat_penalty", C.c_float), ("presence_penalty", C.c_float),
                ("frequency_penalty", C.c_float), ("penalty_last_n", C.c_uint32), ("seed", C.c_uint64)]


class GenerateParams(C.Structure):
    _fields_ = [("n_predict", C.c_int32), ("sampler", SamplerParams), ("ignore_eos", C.c_bool),
                ("stop", C.POINTER(C.c_char_p)), ("n_stop", C.c_size_t), ("context_shift", C.c_bool),
                ("n_keep", C.c_uint32)]


class SessionParams(C.Structure):
    _fields_ = [("n_ctx", C.c_uint32), ("n_batch", C.c_uint32), ("n_threads", C.c_uint32),
                ("kv_type", C.c_int32), ("subsample_threshold", C.c_float)]


CALLBACK = C.CFUNCTYPE(C.c_bool, C.c_char_p, C.c_size_t, C.c_void_p)
lib.subllm_last_error.restype = C.c_char_p
lib.subllm_status_name.restype = C.c_char_p
lib.subllm_generate_default_params.restype = GenerateParams
lib.subllm_session_default_params.restype = SessionParams
lib.subllm_model_load.argtypes = [C.c_char_p, C.c_void_p, C.POINTER(C.c_void_p)]
lib.subllm_session_new.argtypes = [C.c_void_p, C.POINTER(SessionParams), C.POINTER(C.c_void_p)]
lib.subllm_tokenize.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t, C.c_bool, C.c_bool,
                                C.POINTER(C.c_int32), C.c_size_t, C.POINTER(C.c_size_t)]
lib.subllm_generate.argtypes = [C.c_void_p, C.POINTER(C.c_int32), C.c_size_t, C.POINTER(GenerateParams),
                                CALLBACK, C.c_void_p, C.POINTER(C.c_int), C.POINTER(C.c_size_t)]
lib.subllm_session_free.argtypes = [C.c_void_p]
lib.subllm_model_free.argtypes = [C.c_void_p]


def check(status, what):
    if status != 0:
        sys.exit(f"error: {what}: {lib.subllm_last_error().decode()} ({lib.subllm_status_name(status).decode()})")


def main():
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} MODEL.gguf PROMPT [N_PREDICT]")
    path, prompt = sys.argv[1].encode(), sys.argv[2].encode()
    n_predict = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    model, session = C.c_void_p(), C.c_void_p()
    check(lib.subllm_model_load(path, None, C.byref(model)), "load")
    sp = lib.subllm_session_default_params()
    sp.n_ctx = 512
    check(lib.subllm_session_new(model, C.byref(sp), C.byref(session)), "session")
    n = C.c_size_t()
    toks = (C.c_int32 * 4096)()
    check(lib.subllm_tokenize(model, prompt, len(prompt), True, True, toks, 4096, C.byref(n)), "tokenize")
    gp = lib.subllm_generate_default_params()
    gp.n_predict = n_predict
    gp.sampler.temperature = 0.0

    @CALLBACK
    def on_text(text, length, _user):
        sys.stdout.buffer.write(C.string_at(text, length))
        sys.stdout.flush()
        return True

    stop, n_gen = C.c_int(), C.c_size_t()
    sys.stdout.buffer.write(prompt)
    check(lib.subllm_generate(session, toks, n.value, C.byref(gp), on_text, None, C.byref(stop), C.byref(n_gen)),
          "generate")
    sys.stdout.buffer.write(b"\n")
    lib.subllm_session_free(session)
    lib.subllm_model_free(model)


if __name__ == "__main__":
    main()
