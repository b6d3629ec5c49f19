#!/usr/bin/env bash
# Run ON the GPU machine with .gpu-hf carried (tools/gpu/gather-hf-wheels.sh made it): the
# end-to-end decode of run-e2e.sh through Hugging Face transformers on the same machine, for
# its default cache (DynamicCache) and its QuantizedCache with the quanto backend at 2 bits
# (KIVI's axes: keys per channel, values per token, group 32, residual 128): batch {1, 16, 64}
# x context {4K, 32K}, and the largest batch that fits at 32K. Output: $OUT/hf.txt (log) and
# $OUT/e2e-hf.json (the cases), read by tools/bench/e2e_table.py and plot_e2e.py with e2e.json.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
work=$(mktemp -d)
bash tools/gpu/install-hf-wheels.sh > "$logs/hf.txt" 2>&1 || { cat "$logs/hf.txt"; exit 1; }
export PYTHONPATH=/tmp/hf-py
bench=(python3 tools/bench/hf_decode_bench.py --config-json tools/gpu/llama-3.1-8b-config.json)
run() {  # run <name> <seconds> <arguments...>
  local name=$1 limit=$2
  shift 2
  echo "==> transformers: $*" >> "$logs/hf.txt"
  # The JSON is rewritten after every case: a run stopped by its limit keeps what it measured.
  timeout "$limit" "${bench[@]}" "$@" --json "$work/$name.json" >> "$logs/hf.txt" 2>&1 ||
    echo "FAILED or timed out (rc $?): $name" >> "$logs/hf.txt"
}
run dynamic 170 --cache dynamic --batch 1,16,64 --context 4096,32768
run quantized 320 --cache quantized --nbits 2 --batch 1,16,64 --context 4096,32768
run dynamic-fit 80 --cache dynamic --context 32768 --find-max-batch 512
run quantized-fit 120 --cache quantized --nbits 2 --context 32768 --find-max-batch 512
python3 - "$work" "$logs/e2e-hf.json" <<'PY'
import glob, json, sys
cases = []
for path in sorted(glob.glob(sys.argv[1] + "/*.json")):
    doc = json.load(open(path))
    cases += doc["cases"] if "cases" in doc else [doc]
json.dump({"engine": "transformers", "cases": cases}, open(sys.argv[2], "w"), indent=1)
print(f"{len(cases)} transformers cases -> {sys.argv[2]}")
PY
grep -E "^==>|^decode|^out of memory|^largest|FAILED|quanto:|rror" "$logs/hf.txt" | head -60
