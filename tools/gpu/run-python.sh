#!/usr/bin/env bash
# Run ON the GPU machine (carry [".gpu-deps", ".gpu-hf"]; .gpu-deps/shared may stay behind, the
# 64 MiB carry limit): the kivi Python package on the GPU. Builds kivi-runtime for sm_90a in
# /tmp/kivi-kernels (shared with kernel-loop.sh), installs transformers and quanto from .gpu-hf
# into /tmp/hf-py, builds the package with plain CMake into /tmp/kivi-py (no pip needed), then:
#   PY_PARTS  which of "test bench ppl" to run (default: all)
#     test   tests/python/test_kivi_cache.py and test_engine.py with KIVI_TEST_DEVICE=cuda
#     bench  tools/bench/hf_decode_bench.py, Llama-3.1-8B shapes, dummy bf16: DynamicCache,
#            QuantizedCache (quanto, 2 bits) and KiviCache (2 and 4 bits) at PY_CONTEXTS (default
#            4096); PY_CACHES, comma-separated, picks others ("kivi --nbits 2,dynamic");
#            PY_BATCHES batch sizes (default 1), PY_BENCH_ARGS more arguments ("--profile 8")
#     ppl    tools/bench/hf_cache_ppl.py on the bundled tiny Llama (real weights), every cache
# Logs and JSON in $OUT.
set -uo pipefail
source "$(dirname "$0")/quick-build-setup.sh"
parts=${PY_PARTS:-test bench ppl}
start=$(date +%s)
cmake --build "$build" -j "$(nproc)" --target kivi-runtime > "$logs/build.log" 2>&1 ||
  { grep -B2 -A12 "error" "$logs/build.log" | head -60; exit 1; }
echo "kivi-runtime: built in $(( $(date +%s) - start )) s"
bash tools/gpu/install-hf-wheels.sh > "$logs/hf-wheels.log" 2>&1 || { tail -20 "$logs/hf-wheels.log"; exit 1; }
pkg=/tmp/kivi-py
if [ ! -f "$pkg/build/build.ninja" ] || ! grep -q "^KIVI_BUILD_DIR:[A-Z]*=$build\$" "$pkg/build/CMakeCache.txt"; then
  rm -rf "$pkg"
  cmake -S python -B "$pkg/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKIVI_BUILD_DIR="$build" "${stdcxx[@]}" \
        -DPython_EXECUTABLE="$(command -v python3)" > "$logs/python-configure.log" 2>&1 ||
    { tail -30 "$logs/python-configure.log"; exit 1; }
fi
# (configure again: it stages a fresh install of the kivi build)
{ cmake "$pkg/build" && cmake --build "$pkg/build" && cmake --install "$pkg/build" --prefix "$pkg/site"; } \
  > "$logs/python-build.log" 2>&1 ||
  { tail -30 "$logs/python-build.log"; exit 1; }
export PYTHONPATH="$pkg/site:/tmp/hf-py" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import kivi, torch; print('kivi', kivi.__version__, 'plugins', kivi.plugin_dirs(), 'torch', torch.__version__)" || exit 1
echo "package: ready after $(( $(date +%s) - start )) s"
# The device tool returns a few files: keep the results, not the build logs of a build that worked.
rm -f "$logs"/{build,configure,hf-wheels,python-configure,python-build}.log

if [[ " $parts " == *" test "* ]]; then
  KIVI_TEST_DEVICE=cuda KIVI_HOST="$build/bin/kivi-host" timeout 300 python3 -m pytest -q -p no:cacheprovider \
      -W ignore::DeprecationWarning tests/python/test_kivi_cache.py tests/python/test_engine.py > "$logs/pytest.txt" 2>&1
  echo "pytest rc=$?"
  grep -E "^(FAILED|ERROR)|passed|failed" "$logs/pytest.txt" | head -30
fi
if [[ " $parts " == *" bench "* ]]; then
  contexts=${PY_CONTEXTS:-4096}
  IFS=, read -r -a caches <<< "${PY_CACHES:-dynamic,quantized --nbits 2,kivi --nbits 2,kivi --nbits 4}"
  for cache in "${caches[@]}"; do
    name=$(echo "$cache" | tr -d ' -' | sed 's/nbits//')
    # shellcheck disable=SC2086
    timeout 240 python3 tools/bench/hf_decode_bench.py --config-json tools/gpu/llama-3.1-8b-config.json \
        --context "$contexts" --batch "${PY_BATCHES:-1}" --decode-tokens 32 --repeats 3 --cache $cache ${PY_BENCH_ARGS:-} \
        --json "$logs/hf-decode-$name.json" > "$logs/hf-decode-$name.txt" 2>&1
    echo "decode $cache: rc=$? $(grep -E '^decode:|out of memory|Error' "$logs/hf-decode-$name.txt" | tr '\n' ' ')"
  done
fi
if [[ " $parts " == *" ppl "* ]]; then
  timeout 240 python3 tools/bench/hf_cache_ppl.py --model models/kivi-llama-tiny --text data/persuasion-ch1-6.txt \
      --tokens 2048 --chunk 128 --caches dynamic,quantized-4,quantized-2,kivi-4,kivi-2 \
      --json "$logs/hf-ppl.json" > "$logs/hf-ppl.txt" 2>&1
  echo "ppl rc=$?"
  grep -E "^\|" "$logs/hf-ppl.txt"
fi
echo "total $(( $(date +%s) - start )) s"
