#!/usr/bin/env bash
# Run ON the GPU machine after build-and-test.sh: end-to-end decode of a Llama-3.1-8B-shaped
# model with dummy weights (bf16, made on the GPU; no checkpoint is needed) through
# `kivi-host bench`, for the full-precision bf16 cache (read by SDPA) and KIVI-2/-4 (the fused
# kernels):
#   - decode tokens/s and peak device memory at batch {1, 16, 64} x context {4K, 32K}: the
#     cache is filled with random K/V ([bench] fill = "random"), then 64 greedy steps;
#   - batch 1 at 1K, 8K, 64K and 128K (minus the 64 decoded) context too, for the plots;
#   - the same without CUDA graphs at batch 1 and 16, 4K (what the graphs buy);
#   - the largest batch that fits at 32K context, per cache.
# A case that runs out of memory is recorded as such. Output: $OUT/e2e.txt (the log) and
# $OUT/e2e.json (one entry per case, from each run's [output] json).
# E2E_BATCHES, E2E_CONTEXTS, E2E_CACHES (e.g. "bf16 kivi:2"; "bf16:fused" reads the bf16 cache
# with kivi's dense decode kernel, the default, "bf16:sdpa" with ATen's SDPA) narrow the grid; E2E_PARTS picks
# among "grid sweep nographs fit" (all by default); E2E_JSON names the JSON (default e2e.json);
# E2E_MODEL swaps in another model folder (a quick check of the script on a small model).
# E2E_FILL=prefill fills the cache by a real prefill of random tokens (timed: prefill tokens/s,
# so time to first token) instead of random keys and values.
# E2E_REPEATS sets [bench] repeats (timed runs per case; default 2).
# E2E_PROFILE=1 adds one profiled run per case ([bench] profile: the top kernels per step, the
# device's busy share and idle gaps, in the log) with its Chrome trace at $OUT/trace-<case>.json.
set -uo pipefail
build=${KIVI_GPU_BUILD:-build-gpu}
logs=${OUT:-gpu-logs}
mkdir -p "$logs"
work=$(mktemp -d)
mkdir -p "$work/llama-3.1-8b" "$work/json"
# Llama-3.1-8B's published hyperparameters (no weights: [model] weights = "dummy").
cp "$(dirname "$0")/llama-3.1-8b-config.json" "$work/llama-3.1-8b/config.json"
cp "$work/llama-3.1-8b/config.json" "$logs/llama-3.1-8b-config.json"
: > "$logs/e2e.txt"
n=0
# case_run <cache> <batch> <context> <graphs true|false> <find_max_batch true|false> <decode tokens>
case_run() {
  local cache=$1 batch=$2 context=$3 graphs=$4 fit=$5 decode=$6 backend=${1%%:*}
  n=$((n + 1))
  local json="$work/json/$(printf '%03d' $n).json"
  {
    printf 'mode = "bench"\n[model]\npath = "%s"\nweights = "dummy"\ncuda_graphs = %s\n' "${E2E_MODEL:-$work/llama-3.1-8b}" "$graphs"
    printf '[cache]\nbackend = "%s"\n' "$backend"
    if [ "$backend" = kivi ]; then
      printf 'k_bits = %s\nv_bits = %s\n[attention]\nbackend = "kivi"\n' "${cache#*:}" "${cache#*:}"
    elif [ "$cache" != "$backend" ]; then  # bf16:fused / bf16:sdpa: kivi's dense decode kernel or not
      printf '[attention]\nbackend = "sdpa"\nfused_decode = %s\n' "$([ "${cache#*:}" = fused ] && echo true || echo false)"
    else
      printf '[attention]\nbackend = "sdpa"\n'
    fi
    printf '[bench]\nbatch = %s\nprompt_tokens = %s\ndecode_tokens = %s\nfill = "%s"\n' "$batch" "$context" "$decode" "${E2E_FILL:-random}"
    printf 'warmup = 1\nrepeats = %s\nfind_max_batch = %s\n' "${E2E_REPEATS:-2}" "$fit"
    [ "${E2E_PROFILE:-0}" = 1 ] && [ "$fit" = false ] &&
      printf 'profile = true\ntrace = "%s"\n' "$logs/trace-${cache/:/}-${batch}x${context}.json"
    printf '[output]\njson = "%s"\n' "$json"
  } > "$work/bench.toml"
  echo "==> cache $cache, batch $batch, context $context, cuda_graphs $graphs, find_max_batch $fit" >> "$logs/e2e.txt"
  if ! "$build/bin/kivi-host" --config "$work/bench.toml" > "$work/case.log" 2>&1; then
    echo "FAILED" >> "$work/case.log"
    printf '{"cache_label": "%s", "batch": %s, "context": %s, "cuda_graphs": %s, "failed": true, "oom": %s}\n' \
      "$cache" "$batch" "$context" "$graphs" \
      "$(grep -qi 'out of memory' "$work/case.log" && echo true || echo false)" > "$json"
  fi
  cat "$work/case.log" >> "$logs/e2e.txt"
  # Label the entry with the cache as the grid names it (bf16, kivi:2, ...).
  python3 - "$json" "$cache" <<'PY'
import json, sys
path, label = sys.argv[1], sys.argv[2]
doc = json.load(open(path))
doc["cache_label"] = label
json.dump(doc, open(path, "w"))
PY
}
caches=${E2E_CACHES:-bf16 kivi:2 kivi:4}
parts=${E2E_PARTS:-grid sweep nographs fit}
if [[ " $parts " == *" grid "* ]]; then
  for context in ${E2E_CONTEXTS:-4096 32768}; do
    for batch in ${E2E_BATCHES:-1 16 64}; do
      for cache in $caches; do case_run "$cache" "$batch" "$context" true false 64; done
    done
  done
fi
if [[ " $parts " == *" sweep "* ]]; then  # batch 1 along the context, for the plots
  for context in 1024 8192 65536 131008; do
    for cache in $caches; do case_run "$cache" 1 "$context" true false 64; done
  done
fi
if [[ " $parts " == *" nographs "* ]]; then
  for batch in 1 16; do
    for cache in $caches; do case_run "$cache" "$batch" 4096 false false 64; done
  done
fi
if [[ " $parts " == *" fit "* ]]; then  # 2 decode steps per try
  for cache in $caches; do case_run "$cache" 512 32768 false true 2; done
fi
python3 - "$work/json" "$logs/${E2E_JSON:-e2e.json}" <<'PY'
import glob, json, sys
cases = [json.load(open(p)) for p in sorted(glob.glob(sys.argv[1] + "/*.json"))]
json.dump({"model": "Llama-3.1-8B shapes, dummy bf16 weights", "cases": cases}, open(sys.argv[2], "w"), indent=1)
print(f"{len(cases)} cases -> {sys.argv[2]}")
PY
grep -E "^==>|^decode|^device memory|^largest|FAILED|rror" "$logs/e2e.txt"
