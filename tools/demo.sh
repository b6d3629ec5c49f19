#!/usr/bin/env bash
# Sets up what the demo needs (tools/setup.sh: packages, .venv, then kivi-host and the plugins
# only; tools/test.sh builds the rest) and runs the main job on the bundled default: text
# generation with the KIVI-2 cache on a prompt long enough to be quantized, then fp32 vs KIVI-4
# vs KIVI-2 on held-out text. Everything it reads is in the repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
KIVI_BUILD_TARGETS=kivi-runtime "$root/tools/setup.sh"
build_dir=${KIVI_BUILD_DIR:-build}
cd "$root"
printf '\n==> kivi-host --config configs/demo-generate.toml   (bundled tiny Llama, KIVI-2 cache)\n'
"$build_dir/bin/kivi-host" --config configs/demo-generate.toml
printf '\n==> kivi-host --config configs/demo-compare.toml    (fp32 vs KIVI-4 vs KIVI-2 on held-out text)\n'
"$build_dir/bin/kivi-host" --config configs/demo-compare.toml
