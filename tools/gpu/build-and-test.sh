#!/usr/bin/env bash
# Run ON the GPU machine, from the repository root, with .gpu-deps carried along
# (tools/gpu/gather-deps.sh made it). Configures against that machine's torch, builds for
# sm_90a and sm_80, and runs every test; logs go to $OUT (or ./gpu-logs).
#   device run: bash tools/gpu/build-and-test.sh        carry: [".gpu-deps"]
# Extra arguments go to ctest (e.g. -L gpu); KIVI_CMAKE_ARGS adds configure arguments;
# KIVI_GPU_BUILD names the build folder (default build-gpu).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
deps="$root/.gpu-deps"
[ -d "$deps/root" ] || { echo "missing .gpu-deps: run tools/gpu/gather-deps.sh here and carry .gpu-deps"; exit 2; }
python=$(command -v python3)
build=${KIVI_GPU_BUILD:-build-gpu}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  nvcc --version | tail -1
} 2>&1 | tee "$logs/machine.txt"

shared_args=()
[ -d "$deps/shared/data" ] && shared_args=(-DKIVI_SHARED_DATA="$deps/shared/data")
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKIVI_PYTHON="$python" -DKIVI_CUDA=ON \
      -DCMAKE_PREFIX_PATH="$deps/root/usr" "${shared_args[@]}" ${KIVI_CMAKE_ARGS:-} > "$logs/configure.log" 2>&1 ||
  { tail -40 "$logs/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$logs/build.log" 2>&1 || { grep -B2 -A8 "error" "$logs/build.log" | head -80; exit 1; }
echo "build: OK"
ctest --test-dir "$build" --output-on-failure -j 8 "$@" 2>&1 | tee "$logs/ctest.log" | tail -40
exit "${PIPESTATUS[0]}"
