#!/usr/bin/env bash
# Run ON the GPU machine (carry [".gpu-deps"]) after a build of the host and the plugins
# (`kivi-gpu e2e`, or `kivi-gpu build`): the third-party fp8 cache's GPU path, as a user meets it.
# Installs that build into a temporary prefix, builds examples/fp8-cache out of tree against it
# with find_package(kivi), drops the module into the installed plugin folder, lists the
# plugins, and runs examples/fp8-cache/compare-fp8.toml on the GPU (fp16, fp8, KIVI-4 and
# KIVI-2 on the bundled Llama, the model loaded once). Logs and JSON go to $OUT (or ./gpu-logs).
#   KIVI_GPU_BUILD   the build folder (default /tmp/kivi-kernels, where `kivi-gpu e2e` builds)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${KIVI_GPU_BUILD:-/tmp/kivi-kernels}
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
deps="$root/.gpu-deps"
prefix=/tmp/kivi-third-party/prefix
plugin_build=/tmp/kivi-third-party/fp8-cache
rm -rf "$prefix"
fail() { echo "third-party: $1 failed (log: $2)"; tail -30 "$2"; exit 1; }

cmake --install "$build" --prefix "$prefix" > "$logs/fp8-install.log" 2>&1 ||
  fail "installing $build" "$logs/fp8-install.log"
cmake -S examples/fp8-cache -B "$plugin_build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix;$deps/root/usr" > "$logs/fp8-configure.log" 2>&1 ||
  fail "configuring examples/fp8-cache" "$logs/fp8-configure.log"
cmake --build "$plugin_build" > "$logs/fp8-build.log" 2>&1 ||
  fail "building examples/fp8-cache" "$logs/fp8-build.log"
cp "$plugin_build/plugins/libfp8-cache.so" "$prefix/lib/kivi/plugins/"

"$prefix/bin/kivi-host" plugins 2>&1 | tee "$logs/fp8-plugins.txt"
grep -q "refused" "$logs/fp8-plugins.txt" && { echo "third-party: a plugin was refused"; exit 1; }
for dtype in float16 bfloat16; do
  "$prefix/bin/kivi-host" --config examples/fp8-cache/compare-fp8.toml --set model.device=cuda \
      --set model.dtype=$dtype --set perplexity.progress=false \
      --set output.json="$logs/fp8-compare-cuda-$dtype.json" > "$logs/fp8-compare-cuda-$dtype.txt" 2>&1
  echo "== compare-fp8 on cuda, $dtype: rc=$?"
  cat "$logs/fp8-compare-cuda-$dtype.txt"
done
