#!/usr/bin/env bash
# Run ON the GPU machine (carry [".gpu-deps"], gathered by `tools/gpu/kivi-gpu gather-serving`):
# the paged cache's figures. Builds the host, the plugins and test_paged_kivi_gpu for sm_90a in
# /tmp/kivi-kernels (shared with kernel-loop.sh); runs the paged-against-contiguous GPU test;
# then offline workloads of tools/bench/serve_load.py on Llama-3.1-8B shapes with dummy bf16
# weights and the Llama 3.1 tokenizer, one memory budget for every cache. Logs and JSON in $OUT.
#   SERVING_PARTS   which of "test prefix 4k 32k" to run (default: all; each has a time limit)
#   SERVING_BUDGET  the memory budget (default 40GiB)
#   SERVING_N4K, SERVING_N32K, SERVING_NPREFIX   requests per workload (default 256, 48, 64)
#   SERVING_CACHES32K the 32K workload's caches (default bf16,kivi2,kivi4)
#   SERVING_LIMIT32K  seconds for the 32K workload (default 560; its JSON keeps each finished cache)
#   SERVING_CHUNK   [serve] prefill_chunk (default 8192: a prefilling row runs in passes of its
#                   own since row ranges; the figures of 2026-12-03 used 2048)
set -uo pipefail
source "$(dirname "$0")/quick-build-setup.sh"
[ -f "$deps/llama3.1/tokenizer.json" ] || { echo "missing .gpu-deps/llama3.1: run tools/gpu/kivi-gpu gather-serving here"; exit 2; }
parts=${SERVING_PARTS:-test prefix 4k 32k}
budget=${SERVING_BUDGET:-40GiB}
start=$(date +%s)
targets=(kivi-host kivi_kivi_cache kivi_fp_cache kivi_attention kivi_llama kivi_qwen2)
[[ " $parts " == *" test "* ]] && targets+=(test_paged_kivi_gpu)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" > "$logs/build.log" 2>&1 ||
  { grep -B2 -A12 "error" "$logs/build.log" | head -80; exit 1; }
echo "build: OK in $(( $(date +%s) - start )) s"
if [[ " $parts " == *" test "* ]]; then
  "$build/bin/test_paged_kivi_gpu" > "$logs/paged.txt" 2>&1
  echo "test_paged_kivi_gpu rc=$?"
  grep -E -B3 -A10 "FAILED|with expansion" "$logs/paged.txt" | head -60
  tail -3 "$logs/paged.txt"
fi
model=/tmp/llama-3.1-8b-dummy
mkdir -p "$model"
cp tools/gpu/llama-3.1-8b-config.json "$model/config.json"
cp "$deps/llama3.1/"*.json "$model/"
# workload <name> <seconds> <serve_load arguments...>
workload() {
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T))"
  PYTHONUNBUFFERED=1 timeout "$limit" python3 tools/bench/serve_load.py --kivi-host "$build/bin/kivi-host" \
      --model "$model" --weights dummy --device cuda --dtype bfloat16 --memory-budget "$budget" \
      --max-batch 256 --prefill-chunk "${SERVING_CHUNK:-8192}" --json "$logs/offline-$name.json" "$@" > "$logs/offline-$name.txt" 2>&1
  echo "rc=$?"
  grep -E "^\||ok,|Error|error" "$logs/offline-$name.txt" | head -20
}
# A system prompt of 8K tokens before 1K-token questions: time to first token with and without
# prefix sharing (the warm-up request publishes the prefix, as a deployment's first would).
[[ " $parts " == *" prefix "* ]] && workload prefix 240 --offline "${SERVING_NPREFIX:-64}" \
    --shared-prefix 8192 --prompt-tokens 1024 --max-tokens 64 --caches kivi2,kivi2-noshare
[[ " $parts " == *" 4k "* ]] && workload 4k 420 --offline "${SERVING_N4K:-256}" \
    --prompt-tokens 4096 --max-tokens 256 --caches bf16,kivi2,kivi4
[[ " $parts " == *" 32k "* ]] && workload 32k "${SERVING_LIMIT32K:-560}" --offline "${SERVING_N32K:-48}" \
    --prompt-tokens 32768 --max-tokens 256 --caches ${SERVING_CACHES32K:-bf16,kivi2,kivi4}
echo "total $(( $(date +%s) - start )) s"
