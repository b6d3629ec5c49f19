#!/usr/bin/env bash
# Run ON the GPU machine after build-and-test.sh: end-to-end decode of a Llama-3.1-8B-shaped
# model with dummy weights (bf16, made on the GPU; no checkpoint is needed) through
# `kivi-host bench`, for the full-precision bf16 cache and KIVI-2/-4, at batch 1 and 16 with a
# 4K context (4032-token prompts + 64 decode steps). Output: $OUT/e2e.txt.
# E2E_BATCHES and E2E_CACHES (e.g. "bf16 kivi:2") narrow the grid.
set -uo pipefail
build=${KIVI_GPU_BUILD:-build-gpu}
logs=${OUT:-gpu-logs}
mkdir -p "$logs"
work=$(mktemp -d)
mkdir -p "$work/llama-3.1-8b"
# Llama-3.1-8B's published hyperparameters.
cat > "$work/llama-3.1-8b/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
 "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
 "head_dim": 128, "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
 "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
 "tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16"}
JSON
: > "$logs/e2e.txt"
for batch in ${E2E_BATCHES:-1 16}; do
  for cache in ${E2E_CACHES:-bf16 kivi:2 kivi:4}; do
    backend=${cache%%:*}
    {
      printf 'mode = "bench"\n[model]\npath = "%s"\nweights = "dummy"\n' "$work/llama-3.1-8b"
      printf '[cache]\nbackend = "%s"\n' "$backend"
      # The full-precision cache is read by SDPA (its fused kernels), KIVI by the kivi backend.
      if [ "$backend" = kivi ]; then
        printf 'k_bits = %s\nv_bits = %s\n[attention]\nbackend = "kivi"\n' "${cache#*:}" "${cache#*:}"
      else
        printf '[attention]\nbackend = "sdpa"\n'
      fi
      printf '[bench]\nbatch = %s\nprompt_tokens = 4032\ndecode_tokens = 64\nwarmup = 1\nrepeats = 2\n' "$batch"
    } > "$work/bench.toml"
    echo "==> batch $batch, cache $cache" >> "$logs/e2e.txt"
    "$build/bin/kivi-host" --config "$work/bench.toml" >> "$logs/e2e.txt" 2>&1 || echo "FAILED" >> "$logs/e2e.txt"
  done
done
cat "$logs/e2e.txt"
