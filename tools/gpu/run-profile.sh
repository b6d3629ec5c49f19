#!/usr/bin/env bash
# Run ON the GPU machine after build-and-test.sh: where a batch-1 decode step's time goes.
# Profiles `kivi-host bench` (Llama-3.1-8B shapes, dummy bf16 weights, 4K context, 32 steps)
# with Nsight Systems for the bf16 cache and KIVI-2, and prints the kernel summary (time per
# kernel name) and the GPU's busy fraction. Skips when nsys is not installed.
# Output: $OUT/profile-<cache>.txt.
set -uo pipefail
build=${KIVI_GPU_BUILD:-build-gpu}
logs=${OUT:-gpu-logs}
mkdir -p "$logs"
command -v nsys > /dev/null || { echo "nsys: not on this machine" | tee "$logs/profile.txt"; exit 0; }
work=$(mktemp -d)
mkdir -p "$work/llama-3.1-8b"
cp "$(dirname "$0")/llama-3.1-8b-config.json" "$work/llama-3.1-8b/config.json"
for cache in bf16 kivi:2; do
  backend=${cache%%:*}
  {
    printf 'mode = "bench"\n[model]\npath = "%s"\nweights = "dummy"\n[cache]\nbackend = "%s"\n' "$work/llama-3.1-8b" "$backend"
    if [ "$backend" = kivi ]; then printf 'k_bits = 2\nv_bits = 2\n[attention]\nbackend = "kivi"\n'
    else printf '[attention]\nbackend = "sdpa"\n'; fi
    printf '[bench]\nbatch = 1\nprompt_tokens = 4096\ndecode_tokens = 32\nfill = "random"\nwarmup = 1\nrepeats = 1\n'
  } > "$work/bench.toml"
  out="$logs/profile-${backend}.txt"
  nsys profile --force-overwrite true -o "$work/p" --trace cuda --cuda-graph-trace node "$build/bin/kivi-host" --config "$work/bench.toml" > "$out" 2>&1
  nsys stats --report cuda_gpu_kern_sum --format table "$work/p.nsys-rep" 2>&1 | head -40 >> "$out"
  nsys stats --report cuda_api_sum --format table "$work/p.nsys-rep" 2>&1 | head -25 >> "$out"
  head -60 "$out"
done
