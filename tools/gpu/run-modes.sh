#!/usr/bin/env bash
# Run ON the GPU machine after tools/gpu/build-and-test.sh: every kivi-host mode from the
# configs under configs/ on the GPU (device = "auto" picks it), with the held-out text taken
# from the carried corpus slice. Output: $OUT/modes.log (or ./gpu-logs/modes.log).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
host=${KIVI_GPU_BUILD:-build-gpu}/bin/kivi-host
text="$root/.gpu-deps/shared/data/corpora/austen_persuasion.txt"
work=$(mktemp -d)
status=0
for mode in generate perplexity compare bench; do
  # Absolute paths, since the copy lives elsewhere.
  sed -e "s|\"../models/|\"$root/models/|" -e "s|\"../../shared/data/corpora/austen_persuasion.txt\"|\"$text\"|" \
      -e "s|^json = \"compare.json\"|json = \"$logs/compare-gpu.json\"|" \
      "configs/$mode.toml" > "$work/$mode.toml"
  echo "==> kivi-host $mode (configs/$mode.toml)" | tee -a "$logs/modes.log"
  "$host" --config "$work/$mode.toml" < /dev/null >> "$logs/modes.log" 2>&1 || { status=1; echo "FAILED: $mode" | tee -a "$logs/modes.log"; }
done
# chat: SmolLM2 (98 MB) travels only in parts over several calls (smollm2-parts.sh, then
# run-smollm2.sh); in this one call a Qwen2 model with dummy weights and the carried Qwen2.5
# tokenizer (which has a chat template) stands in.
tok="$root/.gpu-deps/shared/data/tokenizers/qwen2.5"
if [ -f "$tok/tokenizer.json" ]; then
  chat="$work/chat-model"
  mkdir -p "$chat"
  cp "$tok"/tokenizer*.json "$chat/"
  cat > "$chat/config.json" <<'JSON'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 128,
 "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
 "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16"}
JSON
  printf 'mode = "chat"\n[model]\npath = "%s"\nweights = "dummy"\n[generate]\nmax_new_tokens = 8\n' "$chat" > "$work/chat.toml"
  echo "==> kivi-host chat (dummy-weight Qwen2, Qwen2.5 tokenizer and chat template, kivi cache)" | tee -a "$logs/modes.log"
  printf 'Hello there\n/stats\nWhat is a cache?\n/stats\n/reset\n/quit\n' |
    "$host" --config "$work/chat.toml" >> "$logs/modes.log" 2>&1 || { status=1; echo "FAILED: chat" | tee -a "$logs/modes.log"; }
fi
tail -c 6000 "$logs/modes.log"
exit $status
