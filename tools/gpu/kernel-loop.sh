#!/usr/bin/env bash
# Run ON the GPU machine (carry [".gpu-deps"]): the quick loop for the KIVI kernels. Builds only
# the kernel test and the attention benchmark, for sm_90a alone, in a folder outside the sent
# tree (/tmp/kivi-kernels), so a later call on the still-warm machine rebuilds only what changed;
# then runs the kernel tests and the benchmark. Logs go to $OUT.
#   KIVI_TEST_FILTER   Catch2 test spec for test_kivi_kernels (default: all)
#   KIVI_BENCH_ARGS    arguments for kivi_attention_bench (default: the issue's grid); "skip"
#   KIVI_NCU=1         also profile one benchmark case with Nsight Compute
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
build=/tmp/kivi-kernels
deps="$root/.gpu-deps"
[ -d "$deps/root" ] || { echo "missing .gpu-deps: run tools/gpu/gather-deps.sh here and carry .gpu-deps"; exit 2; }
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKIVI_PYTHON="$(command -v python3)" \
        -DKIVI_CUDA=ON -DKIVI_CUDA_ARCHITECTURES=90a -DCMAKE_PREFIX_PATH="$deps/root/usr" \
        > "$logs/configure.log" 2>&1 || { tail -40 "$logs/configure.log"; exit 1; }
fi
start=$(date +%s)
cmake --build "$build" -j "$(nproc)" --target test_kivi_kernels kivi_attention_bench > "$logs/build.log" 2>&1 ||
  { grep -B2 -A12 "error" "$logs/build.log" | head -80; exit 1; }
echo "build: OK in $(( $(date +%s) - start )) s"
"$build/bin/test_kivi_kernels" ${KIVI_TEST_FILTER:-} > "$logs/kernels.txt" 2>&1
echo "test_kivi_kernels rc=$?"
grep -E "fused decode|flush|FAILED|failed|passed|with expansion|REQUIRE|CHECK" "$logs/kernels.txt" | head -60
if [ "${KIVI_BENCH_ARGS:-}" != "skip" ]; then
  "$build/bin/kivi_attention_bench" ${KIVI_BENCH_ARGS:---batches 1,8,16,32 --contexts 1024,4096,8192,32768 --extra 1x131072} \
      --json "$logs/attention.json" > "$logs/attention.txt" 2>&1
  echo "attention bench rc=$?"
  cat "$logs/attention.txt"
fi
if [ "${KIVI_NCU:-0}" = "1" ] && command -v ncu > /dev/null; then
  ncu --clock-control none -k regex:decode_mma_kernel -c 2 --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
      "$build/bin/kivi_attention_bench" --batches 32 --contexts 32768 --bits 2 --reps 1 > "$logs/ncu.txt" 2>&1
  echo "ncu rc=$?"
  grep -E "Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Stall|Warp Cycles|Block Limit|Memory \[%\]|DRAM" "$logs/ncu.txt" | head -60
fi
