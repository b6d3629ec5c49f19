#!/usr/bin/env bash
# Run ON the GPU machine (carry [".gpu-deps"]): the quick loop for the KIVI kernels. Builds only
# the kernel test and the attention benchmark, for sm_90a alone, in a folder outside the sent
# tree (/tmp/kivi-kernels), so a later call on the still-warm machine rebuilds only what changed;
# then runs the kernel tests and the benchmark. Logs go to $OUT.
#   KIVI_TEST_FILTER   Catch2 test spec for test_kivi_kernels, with no spaces (e.g. "*mixed*";
#                      default: all; "skip": none)
#   KIVI_KERNEL_BUILD, KIVI_CMAKE_ARGS, KIVI_LOG_TAG: another build folder, configure
#                      arguments and log-name suffix (to compare build variants in one call)
#   KIVI_BENCH_ARGS    arguments for kivi_attention_bench (default: the issue's grid); "skip"
#   KIVI_NCU_CASES     BxL cases to profile with Nsight Compute (e.g. "1x1024 32x32768");
#                      KIVI_NCU_SECTIONS adds sections (e.g. "--section SourceCounters")
#   KIVI_E2E=1         also the host, the plugins and tools/gpu/run-e2e.sh (E2E_* narrow it)
#   KIVI_SANITIZE=1    also the kernel tests under compute-sanitizer memcheck (KIVI_TEST_FILTER
#                      narrows them too; the log is sanitizer$tag.txt)
#   KIVI_PAGED=1       also test_paged_kivi_gpu (the paged cache against the contiguous one)
set -uo pipefail
source "$(dirname "$0")/quick-build-setup.sh"
start=$(date +%s)
# KIVI_E2E=1 also builds the host and the plugins and runs tools/gpu/run-e2e.sh after the
# kernel tests (E2E_* variables narrow its grid).
targets=(test_kivi_kernels kivi_attention_bench)
[ "${KIVI_E2E:-0}" = "1" ] && targets+=(kivi-host kivi_kivi_cache kivi_fp_cache kivi_attention kivi_llama kivi_qwen2)
[ "${KIVI_PAGED:-0}" = "1" ] && targets+=(test_paged_kivi_gpu)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" > "$logs/build$tag.log" 2>&1 ||
  { grep -B2 -A12 "error" "$logs/build$tag.log" | head -80; exit 1; }
echo "build: OK in $(( $(date +%s) - start )) s"
if [ "${KIVI_TEST_FILTER:-}" != "skip" ]; then
  "$build/bin/test_kivi_kernels" ${KIVI_TEST_FILTER:-} > "$logs/kernels$tag.txt" 2>&1
  echo "test_kivi_kernels rc=$?"
  grep -E -A3 "fused decode|FAILED|failed|passed|with expansion|REQUIRE|CHECK" "$logs/kernels$tag.txt" | grep -v "^flush" | head -80
fi
if [ "${KIVI_PAGED:-0}" = "1" ]; then
  "$build/bin/test_paged_kivi_gpu" > "$logs/paged$tag.txt" 2>&1
  echo "test_paged_kivi_gpu rc=$?"
  grep -E -A3 "FAILED|failed|passed|REQUIRE|CHECK" "$logs/paged$tag.txt" | head -40
fi
if [ "${KIVI_SANITIZE:-0}" = "1" ]; then
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  if [ -x "$sanitizer" ]; then
    "$sanitizer" --tool memcheck --error-exitcode 3 "$build/bin/test_kivi_kernels" \
        ${KIVI_TEST_FILTER:-} > "$logs/sanitizer$tag.txt" 2>&1
    echo "compute-sanitizer memcheck rc=$?"
    grep -E "ERROR SUMMARY|Invalid|passed|failed" "$logs/sanitizer$tag.txt" | head -20
  else
    echo "compute-sanitizer: not found on this machine"
  fi
fi
if [ "${KIVI_E2E:-0}" = "1" ]; then
  KIVI_GPU_BUILD="$build" bash "$root/tools/gpu/run-e2e.sh" > /dev/null 2>&1
  echo "e2e rc=$?"
  python3 "$root/tools/bench/e2e_table.py" "$logs/e2e.json" 2>&1 | head -40
  grep -E "^==>.*find_max_batch true|^largest" "$logs/e2e.txt"
fi
if [ "${KIVI_BENCH_ARGS:-}" != "skip" ]; then
  "$build/bin/kivi_attention_bench" ${KIVI_BENCH_ARGS:---batches 1,8,16,32 --contexts 1024,4096,8192,32768 --extra 1x131072} \
      --json "$logs/attention$tag.json" > "$logs/attention$tag.txt" 2>&1
  echo "attention bench rc=$?"
  grep -v "^measured" "$logs/attention$tag.txt"
fi
# Nsight Compute on the fused kernels of one case per KIVI_NCU_CASES item (BxL), e.g. "1x1024 32x32768".
if [ -n "${KIVI_NCU_CASES:-}" ] && command -v ncu > /dev/null; then
  for case in $KIVI_NCU_CASES; do
    ncu --clock-control none -k regex:"decode_mma_kernel|combine_splits" -c 2 --section SpeedOfLight \
        --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
        --section MemoryWorkloadAnalysis --section InstructionStats ${KIVI_NCU_SECTIONS:-} \
        "$build/bin/kivi_attention_bench" --batches "${case%x*}" --contexts "${case#*x}" --bits 2 --reps 1 \
        > "$logs/ncu$tag-$case.txt" 2>&1
    echo "== ncu $case rc=$?"
    grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Registers Per|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Block Limit|Grid Size|Issued Warp|No Eligible|Dynamic Shared" "$logs/ncu$tag-$case.txt" | head -60
  done
fi
