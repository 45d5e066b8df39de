#!/usr/bin/env bash
# Converts the trained checkpoints (train/.cache/ckpt-{subllm,llama}) with
# subllm-convert into the committed files: trained/<name>.{f16,q8_0}.gguf
# (KINDS="subllm" converts one).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${SUBLLM_TRAIN_OUT:-train/.cache}
OUT=${SUBLLM_TRAINED_DIR:-trained}
cargo build --release -q -p subllm-convert
mkdir -p "$OUT"
for kind in ${KINDS:-subllm llama}; do
  name=$kind-austen-9m
  for t in f16 q8_0; do
    ./target/release/subllm-convert "$CACHE/ckpt-$kind" -o "$OUT/$name.$t.gguf" --outtype "$t" --name "$name" -q
  done
done
ls -l "$OUT"/*.gguf
