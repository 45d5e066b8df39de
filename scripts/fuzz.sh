#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a fixed time each and prints,
# per target, the executions and the findings (crashes, timeouts, OOMs).
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [TARGET...]
#
# -t: seconds per target (default 60); -j: targets run side by side
# (default 1). Targets default to all of them. The corpus grows in
# fuzz/corpus/TARGET (not committed), starting from fuzz/seeds/TARGET;
# findings land in fuzz/artifacts/TARGET. Builds with the machine's stable
# toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its sanitizer flags);
# installs cargo-fuzz if it is missing. Exit status 1 if anything was found.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=60
jobs=1
while getopts "t:j:" o; do
  case $o in
    t) secs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) echo "usage: $0 [-t SECONDS] [-j JOBS] [TARGET...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
all="gguf safetensors torch pickle tokenizer chat_template capi_tokenize"
targets=${*:-$all}

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build -O)
bin=fuzz/target/x86_64-unknown-linux-gnu/release

# inputs larger than a target needs only slow it down
max_len() {
  case $1 in
    gguf) echo 131072 ;;
    safetensors | torch) echo 65536 ;;
    *) echo 8192 ;;
  esac
}

run_one() {
  local t=$1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  # -rss_limit_mb: a process above 2 GiB is a finding (an input that makes
  # a small file allocate without bound); -timeout: one input over 10 s is.
  # -fork=1 with -ignore_*: a finding is saved and fuzzing goes on.
  # allocator_may_return_null: an allocation the chat templates' child
  # process may not make (its address space is capped) fails there, as it
  # would without the sanitizer, instead of ASan reporting it as the
  # parent's own out-of-memory; elsewhere a failed allocation still aborts.
  ASAN_OPTIONS="allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" "$bin/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
    -max_total_time="$secs" -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=10 \
    -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -artifact_prefix="fuzz/artifacts/$t/" \
    >"fuzz/artifacts/$t.log" 2>&1 || true
  local execs found
  # fork mode's status lines: "#EXECUTIONS: cov: ... crash: 0/0/0 time: ..."
  execs=$(awk '/^#[0-9]+:/ { n = substr($1, 2, length($1) - 2) } END { print n }' "fuzz/artifacts/$t.log")
  found=$(find "fuzz/artifacts/$t" -type f | wc -l)
  printf '%-14s %12s executions in %ss, %s findings\n' "$t" "${execs:-?}" "$secs" "$found"
}

export -f run_one max_len
export secs bin
mkdir -p fuzz/artifacts
status=0
# shellcheck disable=SC2086
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}' | tee fuzz/artifacts/summary.txt
if grep -qv ' 0 findings$' fuzz/artifacts/summary.txt; then
  status=1
  echo "findings (reproduce with fuzz/target/.../TARGET FILE):"
  find fuzz/artifacts -mindepth 2 -type f
fi
exit $status
