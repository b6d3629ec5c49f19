#!/usr/bin/env bash
# Sets up everything kivi needs on a fresh Debian 12 machine, then configures and builds.
#   - Debian packages (toml++, Catch2 v2, Boost.DLL, nlohmann-json, PCRE2, utf8proc, ninja);
#   - .venv: torch==2.11.0 (libtorch for the C++ build) and the pinned Python references;
#   - build/ (or $KIVI_BUILD_DIR): CMake + Ninja, RelWithDebInfo;
#   - the Python package (python/, `import kivi`) from that build, into .venv.
# Idempotent: each step is skipped when already done. Environment:
#   KIVI_BUILD_DIR=build-asan KIVI_SANITIZE=1 tools/setup.sh   # ASan + UBSan build
#   KIVI_BUILD_TARGETS="kivi-runtime" tools/setup.sh           # build only these targets
#     (kivi-runtime: kivi-host and the plugins, what tools/demo.sh runs; default: everything)
#   KIVI_CMAKE_ARGS="-DKIVI_CUDA=OFF" tools/setup.sh           # extra CMake settings
#     (applied when the build folder is configured: a new one, or any KIVI_SANITIZE=1 run)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build_dir=${KIVI_BUILD_DIR:-build}

# Each step says how long set-up has run so far (the first run takes minutes).
step() { printf '\n==> [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# --- Debian packages -------------------------------------------------------------------
packages=(cmake ninja-build g++ python3-venv libtomlplusplus-dev catch2 libboost1.81-dev
          nlohmann-json3-dev libpcre2-dev libutf8proc-dev libgloo-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" > /dev/null
fi

# --- Python: libtorch and the reference implementations ---------------------------------
stamp=.venv/.kivi-requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing Python packages into .venv (torch 2.11.0 is large: a few minutes)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # Not quiet: pip's lines (collecting, downloading, installing) are the progress.
  # (pipefail: a failing pip fails the pipeline, and set -e stops here.)
  .venv/bin/pip install --progress-bar off -r requirements.txt 2>&1 |
    { grep --line-buffered -E '^(Collecting|Downloading|Installing|Successfully|ERROR)' || true; }
  echo "$want" > "$stamp"
fi

# --- Configure and build ----------------------------------------------------------------
cmake_args=(-G Ninja -DKIVI_PYTHON="$root/.venv/bin/python")
[ "${KIVI_SANITIZE:-0}" = "1" ] && cmake_args+=(-DKIVI_SANITIZE=ON)
# shellcheck disable=SC2206
cmake_args+=(${KIVI_CMAKE_ARGS:-})
if [ ! -f "$build_dir/build.ninja" ] || [ "${KIVI_SANITIZE:-0}" = "1" ]; then
  step "configuring $build_dir"
  mkdir -p "$build_dir"
  cmake -S . -B "$build_dir" "${cmake_args[@]}" > "$build_dir/configure.log" 2>&1 ||
    { cat "$build_dir/configure.log"; exit 1; }
fi
targets=()
for t in ${KIVI_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
step "building $build_dir: ${KIVI_BUILD_TARGETS:-everything} ($(nproc) jobs; [done/total] steps below)"
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}"
step "built"

# --- The Python package (python/: `import kivi`), from this build, into .venv ---------------
# Not for sanitizer builds (an instrumented libkivi_core in an uninstrumented python) or
# partial ones (it carries the whole install). Incremental: python/build keeps its objects.
if [ "${KIVI_SANITIZE:-0}" != "1" ] && [ -z "${KIVI_BUILD_TARGETS:-}" ]; then
  step "installing the Python package (python/) into .venv (compiles kivi._C the first time: a minute or two)"
  KIVI_BUILD_DIR="$build_dir" .venv/bin/pip install -q --no-build-isolation --no-deps ./python
  step "installed: .venv/bin/python -c 'import kivi'"
fi
