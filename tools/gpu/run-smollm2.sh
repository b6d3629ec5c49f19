#!/usr/bin/env bash
# Run ON the GPU machine after the four parts arrived (tools/gpu/smollm2-parts.sh receive) and
# kivi-host was built (build-and-test.sh): joins and checks SmolLM2-135M-Instruct's GGUF, then
#   - `kivi-host chat` through the model's own template (configs/chat.toml, greedy) with the
#     fp16 cache and with KIVI-2 and KIVI-4: two turns each, /stats, /reset, /quit;
#   - configs/smollm2-compare.toml and configs/smollm2-chat-agreement.toml on the GPU (float32),
#     to set beside the CPU's figures in docs/gguf.md.
# Output: $OUT/smollm2.log and $OUT/smollm2-*.json.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
host=${KIVI_GPU_BUILD:-build-gpu}/bin/kivi-host
bash tools/gpu/smollm2-parts.sh join > "$logs/smollm2.log" 2>&1 || { cat "$logs/smollm2.log"; exit 1; }
gguf=/tmp/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
text="$root/.gpu-deps/shared/data/corpora/austen_persuasion.txt"
work=$(mktemp -d)
status=0
for cache in fp16 kivi:2 kivi:4; do
  {
    sed -e "s|^path = .*|path = \"$gguf\"|" -e 's|^temperature = .*|temperature = 0.0|' configs/chat.toml
    if [ "$cache" = fp16 ]; then
      printf '[cache]\nbackend = "fp16"\n[attention]\nbackend = "sdpa"\n'
    else
      printf '[cache]\nbackend = "kivi"\nk_bits = %s\nv_bits = %s\n[attention]\nbackend = "kivi"\n' "${cache#*:}" "${cache#*:}"
    fi
  } > "$work/chat.toml"
  echo "==> kivi-host chat, SmolLM2 on the GPU, cache $cache" | tee -a "$logs/smollm2.log"
  printf 'What is the capital of France?\nAnd what is it famous for?\n/stats\n/reset\nWho wrote Pride and Prejudice?\n/quit\n' |
    "$host" --config "$work/chat.toml" >> "$logs/smollm2.log" 2>&1 || { status=1; echo "FAILED: chat $cache" | tee -a "$logs/smollm2.log"; }
done
for name in smollm2-compare smollm2-chat-agreement; do
  sed -e "s|^path = .*|path = \"$gguf\"|" -e 's|^device = "cpu"|device = "cuda"|' \
      -e "s|^text = .*|text = \"$text\"|" -e "s|^json = .*|json = \"$logs/$name-gpu.json\"|" \
      "configs/$name.toml" > "$work/$name.toml"
  echo "==> kivi-host compare (configs/$name.toml on the GPU, float32)" | tee -a "$logs/smollm2.log"
  "$host" --config "$work/$name.toml" < /dev/null >> "$logs/smollm2.log" 2>&1 || { status=1; echo "FAILED: $name" | tee -a "$logs/smollm2.log"; }
done
tail -c 9000 "$logs/smollm2.log"
exit $status
