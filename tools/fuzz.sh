#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz (clang, ASan + UBSan, -DKIVI_FUZZ=ON) in
# build-fuzz/ (or $KIVI_FUZZ_BUILD_DIR) and runs them:
#   tools/fuzz.sh                 # every harness, 60 seconds each
#   tools/fuzz.sh jinja 300       # one harness (the names in `all` below)
# Each run starts from the committed seeds (tests/fuzz/corpus/<name>, read only) and a working
# corpus in build-fuzz/corpus/<name> that grows between runs. A crash, leak, sanitizer report or
# timeout stops that harness: its input is in build-fuzz/artifacts/<name>/ and the script exits
# non-zero. Fix it, then commit the input under tests/fuzz/regressions/<name>/ (the normal
# build's fuzz_<name>_replay test replays it). Extra libFuzzer flags: KIVI_FUZZ_FLAGS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KIVI_FUZZ_BUILD_DIR:-$root/build-fuzz}
all=(jinja tokenizer_json tokenizer_encode toml host_config http openai gguf safetensors)
targets=("${1:-all}")
[ "${targets[0]}" = all ] && targets=("${all[@]}")
seconds=${2:-60}
declare -A max_len=([jinja]=8192 [tokenizer_json]=16384 [tokenizer_encode]=4096 [toml]=4096 [host_config]=4096 [http]=8192 [openai]=4096 [gguf]=8192 [safetensors]=4096)

# clang with libFuzzer and the sanitizer runtimes (Debian 12: clang 14).
if ! command -v clang++ > /dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed"; then
  echo "==> installing clang and its fuzzer runtime (Debian packages)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq clang libclang-rt-14-dev > /dev/null
fi
if [ ! -f "$build/build.ninja" ]; then
  python=$root/.venv/bin/python
  [ -x "$python" ] || { echo "fuzz.sh: run tools/setup.sh first (.venv with torch: CMake needs it)" >&2; exit 1; }
  mkdir -p "$build"
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKIVI_FUZZ=ON -DKIVI_CUDA=OFF -DKIVI_BUILD_BENCHMARKS=OFF -DKIVI_PYTHON="$python" \
    > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
fi
ninja -C "$build" -j "$(nproc)" $(printf 'fuzz_%s ' "${targets[@]}")

status=0
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "fuzz.sh: unknown harness '$t' (${all[*]})" >&2; exit 2; }
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  echo "==> fuzz_$t for ${seconds}s"
  start=$SECONDS
  # shellcheck disable=SC2086
  if "$build/bin/fuzz_$t" "$build/corpus/$t" "$root/tests/fuzz/corpus/$t" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
      -artifact_prefix="$build/artifacts/$t/" -print_final_stats=1 ${KIVI_FUZZ_FLAGS:-} \
      > "$build/fuzz_$t.log" 2>&1; then
    result=ok
  else
    result=FAILED; status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz_$t.log" | grep -o '[0-9]*$' || echo '?')
  echo "    $result: $runs executions in $((SECONDS - start))s, corpus $(ls "$build/corpus/$t" | wc -l) files (log: $build/fuzz_$t.log)"
  [ "$result" = ok ] || grep -m3 -E 'ERROR|SUMMARY|uncaught|Test unit written' "$build/fuzz_$t.log" || true
done
exit $status
