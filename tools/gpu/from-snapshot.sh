#!/usr/bin/env bash
# Run ON the GPU machine from the repository root: links the data folders of the sent working
# tree (models/, tests/fixtures/, .gpu-deps/) into .gpu-src/ (made by snapshot.sh) and runs the
# given command there, e.g. bash .gpu-src/tools/gpu/from-snapshot.sh bash tools/gpu/build-and-test.sh
set -euo pipefail
root=$(pwd)
src="$root/.gpu-src"
[ -d "$src" ] || { echo "no .gpu-src: run tools/gpu/snapshot.sh here and carry .gpu-src"; exit 2; }
ln -sfn "$root/models" "$src/models"
ln -sfn "$root/tests/fixtures" "$src/tests/fixtures"
ln -sfn "$root/.gpu-deps" "$src/.gpu-deps"
# The build folder stays outside .gpu-src, so a later call (which replaces the carried
# .gpu-src) on the same warm machine rebuilds only what changed.
export KIVI_GPU_BUILD="$root/build-gpu"
cd "$src"
exec "$@"
