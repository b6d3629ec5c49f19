#!/usr/bin/env bash
# Sets up everything (tools/setup.sh) and runs the main job on the bundled default config.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup.sh"
build_dir=${KIVI_BUILD_DIR:-build}
printf '\n==> kivi-host --config configs/default.toml\n'
cd "$root"
"$build_dir/bin/kivi-host" plugins
"$build_dir/bin/kivi-host" --config configs/default.toml
