#!/usr/bin/env bash
# Run ON the GPU machine right after `build-and-test.sh -L gpu` built the tree: every kivi-host
# mode on the GPU (run-modes.sh), the decode attention benchmark, the server load benchmark
# (fp16 against KIVI-2 on the bundled Llama) and a slice of the end-to-end 8B-shaped decode
# (run-e2e.sh at 4K, batch 1 and 16).
# Each part has a time limit so the whole fits in one device call. Output under $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${KIVI_GPU_BUILD:-build-gpu}
logs=${OUT:-gpu-logs}
mkdir -p "$logs"
timeout 100 bash "$here/run-modes.sh" > /dev/null 2>&1; echo "modes rc=$?" >> "$logs/modes.log"
timeout 80 "$build/bin/kivi_attention_bench" --batches 1,8,16,32 --contexts 1024,4096,8192,32768 \
    --extra 1x131072 --reps 30 --json "$logs/attention.json" > "$logs/attention.txt" 2>&1
echo "attention bench rc=$?" >> "$logs/attention.txt"
for cache in fp16 kivi2; do
  timeout 90 python3 tools/bench/serve_load.py --kivi-host "$build/bin/kivi-host" --model models/kivi-llama-tiny \
      --device cuda --caches "$cache" --levels 1,16,64,256 --prompt-tokens 512 --max-tokens 128 \
      --requests-per-client 2 --stop-after-failure --json "$logs/serve_load_$cache.json" >> "$logs/serve_load.txt" 2>&1
  echo "serve load $cache rc=$?" >> "$logs/serve_load.txt"
done
# A quick slice of the end-to-end grid; the whole grid (run-e2e.sh alone) takes a call of its own.
E2E_PARTS=grid E2E_CONTEXTS=4096 E2E_BATCHES="1 16" timeout 120 bash "$here/run-e2e.sh" > /dev/null 2>&1
echo "e2e rc=$?" >> "$logs/e2e.txt"
tail -n 25 "$logs/modes.log"; cat "$logs/attention.txt" "$logs/serve_load.txt" "$logs/e2e.txt"
