#!/usr/bin/env bash
# Run ON the GPU machine (carry [".gpu-deps"]): tensor parallelism's N = 1 path on one GPU, the
# code path of N GPUs (ProcessGroupNCCL, its all-reduces inside the decode step's CUDA graphs):
#   1. the bundled models' greedy generations on CUDA without [parallel] and with --tp 1 (equal);
#   2. decode tokens/s of Llama-3.1-8B shapes (dummy bf16 weights) for the bf16 and KIVI-2 caches
#      at PAR_BATCHES x PAR_CONTEXT, without [parallel] and with --tp 1, side by side: what the
#      all-reduces cost when there is nothing to reduce.
# Builds in KIVI_KERNEL_BUILD (default /tmp/kivi-kernels) for sm_90a; logs in $OUT.
set -uo pipefail
source "$(dirname "$0")/quick-build-setup.sh"
start=$(date +%s)
targets=(kivi-host kivi_kivi_cache kivi_fp_cache kivi_attention kivi_llama kivi_qwen2)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" > "$logs/build.log" 2>&1 ||
  { grep -B2 -A12 "error" "$logs/build.log" | head -80; exit 1; }
grep -E "NCCL|nccl" "$logs/configure$tag.log" | head -3
echo "build: OK in $(( $(date +%s) - start )) s"
host="$build/bin/kivi-host"

for model in kivi-llama-tiny kivi-qwen2-tiny; do
  sets=(--set model.device=cuda --set "model.path=$root/models/$model")
  "$host" --config configs/generate.toml "${sets[@]}" > "$logs/gen-$model.txt" 2>&1
  rc1=$?
  "$host" --config configs/generate.toml "${sets[@]}" --tp 1 > "$logs/gen-$model-tp1.txt" 2>&1
  rc2=$?
  a=$(sed '/^cache:/,$d' "$logs/gen-$model.txt")
  b=$(sed '/^cache:/,$d' "$logs/gen-$model-tp1.txt")
  echo "generate $model on cuda: rc $rc1 / --tp 1 rc $rc2, text $([ "$a" = "$b" ] && echo equal || echo DIFFERENT)"
  [ "$a" = "$b" ] || { diff <(echo "$a") <(echo "$b") | head -20; tail -5 "$logs/gen-$model-tp1.txt"; }
done

work=/tmp/kivi-parallel
mkdir -p "$work/llama-3.1-8b"
cp "$root/tools/gpu/llama-3.1-8b-config.json" "$work/llama-3.1-8b/config.json"
printf '| cache | batch | context | decode tokens/s | with --tp 1 | ratio |\n| --- | --- | --- | --- | --- | --- |\n'
for cache in bf16 kivi; do
  for batch in ${PAR_BATCHES:-1 16}; do
    {
      printf 'mode = "bench"\n[model]\npath = "%s"\nweights = "dummy"\n' "$work/llama-3.1-8b"
      if [ "$cache" = kivi ]; then
        printf '[cache]\nbackend = "kivi"\nk_bits = 2\nv_bits = 2\n[attention]\nbackend = "kivi"\n'
      else
        printf '[cache]\nbackend = "bf16"\n[attention]\nbackend = "sdpa"\n'
      fi
      printf '[bench]\nbatch = %s\nprompt_tokens = %s\ndecode_tokens = 64\nfill = "random"\nwarmup = 1\nrepeats = 3\n' \
        "$batch" "${PAR_CONTEXT:-4096}"
    } > "$work/bench.toml"
    "$host" --config "$work/bench.toml" > "$logs/bench-$cache-$batch.txt" 2>&1
    "$host" --config "$work/bench.toml" --tp 1 > "$logs/bench-$cache-$batch-tp1.txt" 2>&1
    one=$(grep -oP '^decode: \K[0-9.]+' "$logs/bench-$cache-$batch.txt")
    tp=$(grep -oP '^decode: \K[0-9.]+' "$logs/bench-$cache-$batch-tp1.txt")
    ratio=$(python3 -c "print(f'{float(\"${tp:-0}\") / float(\"${one:-1}\"):.3f}')" 2>/dev/null)
    echo "| $cache | $batch | ${PAR_CONTEXT:-4096} | ${one:-failed} | ${tp:-failed} | $ratio |"
    [ -n "$tp" ] || tail -5 "$logs/bench-$cache-$batch-tp1.txt"
  done
done
echo "total: $(( $(date +%s) - start )) s"
