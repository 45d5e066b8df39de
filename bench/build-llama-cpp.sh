#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-quantize and llama-perplexity, natively optimized, from
# the llama.cpp source vendored in the llama-cpp-python source package (PyPI),
# for the side-by-side benchmark. Outside the default build and CI; cached in
# bench/.cache/ (a second run only prints the paths).
#
#   bench/build-llama-cpp.sh      -> bench/.cache/llama.cpp/build/bin/{llama-bench,llama-quantize,llama-perplexity}
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VER=0.3.36
SDIST=llama_cpp_python-$VER.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CACHE=.cache
SRC=$CACHE/llama.cpp
BIN=$SRC/build/bin
mkdir -p "$CACHE"

if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-quantize" ] && [ -x "$BIN/llama-perplexity" ]; then
  echo "$PWD/$BIN"
  exit 0
fi

command -v cmake >/dev/null || "$PY" -m pip install --quiet cmake
command -v ninja >/dev/null || "$PY" -m pip install --quiet ninja

if [ ! -f "$SRC/CMakeLists.txt" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VER" -d "$tmp"
  echo "$SDIST_SHA256  $tmp/$SDIST" | sha256sum -c --quiet
  tar -xzf "$tmp/$SDIST" -C "$tmp" "llama_cpp_python-$VER/vendor/llama.cpp"
  rm -rf "$SRC"
  mv "$tmp/llama_cpp_python-$VER/vendor/llama.cpp" "$SRC"
fi

# Every x86 extension this CPU runs, as -march=native would give, except AMX:
# these machines advertise AMX in cpuinfo, but the sandbox grants no AMX tile
# state, so ggml's AMX matmul dies on its first `tilezero` (SIGILL). Where the
# CPU has no AVX-512, set SUBLLM_LLAMA_NATIVE=1 to build with GGML_NATIVE.
# OpenMP is llama.cpp's default thread pool on Linux.
if [ "${SUBLLM_LLAMA_NATIVE:-0}" = 1 ] || ! grep -q avx512_vnni /proc/cpuinfo; then
  ISA="-DGGML_NATIVE=ON"
else
  # each extension on only where cpuinfo lists it (AVX-VNNI, the VEX form,
  # is missing on AMD Zen 4, which has the AVX-512 form: forcing it on
  # there gives a SIGILL)
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  has() { case " $flags " in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
  ISA="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
       -DGGML_BMI2=$(has bmi2) -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON
       -DGGML_AVX512_VBMI=$(has avx512vbmi) -DGGML_AVX512_BF16=$(has avx512_bf16)
       -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  $ISA -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$SRC/build" --target llama-bench llama-quantize llama-perplexity -j "$(nproc)" >&2
echo "$PWD/$BIN"
