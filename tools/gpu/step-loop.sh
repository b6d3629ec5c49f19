#!/usr/bin/env bash
# Run ON the GPU machine (carry [".gpu-deps"]): the quick loop for the decode step. Builds the
# host, the plugins, model_gpu_test and the cache/attention GPU tests for sm_90a alone in a folder outside the sent tree
# (/tmp/kivi-kernels, shared with kernel-loop.sh, so a later call on the still-warm machine
# rebuilds only what changed); runs those GPU tests (fused ops, CUDA graphs, fp cache append, dense decode); then the
# end-to-end cases of tools/gpu/run-e2e.sh that E2E_* name (default: batch 1 at 4K for bf16
# and KIVI-2, with the step profile). Logs go to $OUT.
#   STEP_TEST_FILTER   Catch2 test spec for model_gpu_test, no spaces ("skip": none; default:
#                      the fused ops and the CUDA graphs)
set -uo pipefail
source "$(dirname "$0")/quick-build-setup.sh"
start=$(date +%s)
targets=(kivi-host kivi_kivi_cache kivi_fp_cache kivi_attention kivi_llama kivi_qwen2 model_gpu_test
         test_fp_cache_gpu test_dense_decode)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" > "$logs/build.log" 2>&1 ||
  { grep -B2 -A12 "error" "$logs/build.log" | head -80; exit 1; }
echo "build: OK in $(( $(date +%s) - start )) s"
filter=${STEP_TEST_FILTER:-*fused*,*graphs*}
if [ "$filter" != "skip" ]; then
  "$build/bin/model_gpu_test" "$filter" > "$logs/model_gpu.txt" 2>&1
  echo "model_gpu_test rc=$?"
  grep -E -B3 -A8 "FAILED|with expansion" "$logs/model_gpu.txt" | head -60
  tail -3 "$logs/model_gpu.txt"
  for t in test_fp_cache_gpu test_dense_decode; do
    "$build/bin/$t" > "$logs/$t.txt" 2>&1
    echo "$t rc=$?"
    grep -E -B3 -A8 "FAILED|with expansion" "$logs/$t.txt" | head -40
    tail -2 "$logs/$t.txt"
  done
fi
E2E_PARTS=${E2E_PARTS:-grid} E2E_BATCHES=${E2E_BATCHES:-1} E2E_CONTEXTS=${E2E_CONTEXTS:-4096} \
  E2E_CACHES=${E2E_CACHES:-bf16 kivi:2} E2E_PROFILE=${E2E_PROFILE:-1} KIVI_GPU_BUILD="$build" \
  bash "$root/tools/gpu/run-e2e.sh" > /dev/null 2>&1
echo "e2e rc=$?"
python3 "$root/tools/bench/e2e_table.py" "$logs/${E2E_JSON:-e2e.json}" 2>&1 | head -30
# The step profiles' top kernels and idle gaps, from the log.
grep -E "^==>|^profile|^\| " "$logs/e2e.txt" | head -90
