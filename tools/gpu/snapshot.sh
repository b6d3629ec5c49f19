#!/usr/bin/env bash
# Run HERE. Exports the committed tree (HEAD) into .gpu-src/ (git-ignored), without models/
# and tests/fixtures/ (the copy of the working tree that the device tool sends has them), so
# that a device run builds exactly what is committed while the working tree holds work in
# progress. On the GPU machine (carry [".gpu-deps", ".gpu-src"]):
#   bash .gpu-src/tools/gpu/from-snapshot.sh <command...>
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
rm -rf .gpu-src
mkdir .gpu-src
git archive HEAD -- . ':!models' ':!tests/fixtures' | tar -x -C .gpu-src
echo "snapshot of $(git rev-parse --short HEAD) in .gpu-src ($(du -sh .gpu-src | cut -f1))"
