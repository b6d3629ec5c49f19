#!/usr/bin/env bash
# Run ON the GPU machine after build-and-test.sh built the tree: the KIVI kernel tests with
# their printed error figures, compute-sanitizer memcheck over the kernel tests, the GPU model
# tests' figures, and the decode attention benchmark (table + JSON). Logs go to $OUT.
set -uo pipefail
build=${KIVI_GPU_BUILD:-build-gpu}
logs=${OUT:-gpu-logs}
mkdir -p "$logs"
{
  echo "== test_kivi_kernels"
  "$build/bin/test_kivi_kernels"
  echo "rc=$?"
  if command -v compute-sanitizer > /dev/null; then
    for t in "kivi key flush kernel*" "kivi value flush kernel*" "fused decode attention: mixed*"; do
      echo "== compute-sanitizer memcheck: $t"
      compute-sanitizer --tool memcheck --error-exitcode 3 "$build/bin/test_kivi_kernels" "$t" 2>&1 | tail -6
      echo "rc=${PIPESTATUS[0]}"
    done
  else
    echo "compute-sanitizer: not on this machine"
  fi
} > "$logs/kernels.txt" 2>&1
"$build/bin/model_gpu_test" > "$logs/model_gpu.txt" 2>&1; echo "model_gpu_test rc=$?" >> "$logs/model_gpu.txt"
"$build/bin/kivi_attention_bench" --batches 1,8,16,32 --contexts 1024,4096,8192,32768 \
    --extra 1x131072 --json "$logs/attention.json" > "$logs/attention.txt" 2>&1
echo "attention bench rc=$?" >> "$logs/attention.txt"
tail -3 "$logs/kernels.txt" "$logs/model_gpu.txt"
cat "$logs/attention.txt"
