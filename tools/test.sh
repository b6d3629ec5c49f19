#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs every test with CTest. Extra arguments go to ctest,
# e.g. `tools/test.sh -L foundation`. GPU tests skip on a machine without a GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/setup.sh"
build_dir=${KIVI_BUILD_DIR:-build}
cd "$root"
printf '\n==> running tests\n'
if [ "${KIVI_SANITIZE:-0}" = "1" ]; then
  # libtorch is not instrumented; its one-time allocations at exit are not our leaks.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
fi
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "$@"
