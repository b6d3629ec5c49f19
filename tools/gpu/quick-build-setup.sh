# Sourced by kernel-loop.sh and step-loop.sh (run ON the GPU machine): the shared prologue. Sets
# root (and cds there), logs ($OUT), build (KIVI_KERNEL_BUILD, default /tmp/kivi-kernels), tag
# (KIVI_LOG_TAG) and deps (.gpu-deps, which must have been carried), and configures the build
# folder for sm_90a alone the first time (KIVI_CMAKE_ARGS adds arguments).
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
build=${KIVI_KERNEL_BUILD:-/tmp/kivi-kernels}
tag=${KIVI_LOG_TAG:-}
deps="$root/.gpu-deps"
[ -d "$deps/root" ] || { echo "missing .gpu-deps: run tools/gpu/gather-deps.sh here and carry .gpu-deps"; exit 2; }
# FlashInfer's headers, when gathered (tools/gpu/gather-flashinfer.sh), make it a peer in the bench.
flashinfer=()
[ -d "$deps/flashinfer/include" ] && flashinfer=(-DKIVI_FLASHINFER_INCLUDE="$deps/flashinfer/include")
# On the GPU image the link finds a static libstdc++ first (libkivi_core came out carrying its own
# copy, with no NEEDED libstdc++.so.6): kivi-host survives that, a Python process whose torch loads
# the system's libstdc++.so.6 does not (the kivi package crashed in the first ostream it used).
# Name the shared one after every target's objects, where the linker's --as-needed keeps it.
stdcxx=()
[ -e /usr/lib/x86_64-linux-gnu/libstdc++.so.6 ] &&
  stdcxx=(-DCMAKE_CXX_STANDARD_LIBRARIES=/usr/lib/x86_64-linux-gnu/libstdc++.so.6)
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKIVI_PYTHON="$(command -v python3)" "${stdcxx[@]}" \
        -DKIVI_CUDA=ON -DKIVI_CUDA_ARCHITECTURES=90a -DCMAKE_PREFIX_PATH="$deps/root/usr" "${flashinfer[@]}" ${KIVI_CMAKE_ARGS:-} \
        > "$logs/configure$tag.log" 2>&1 || { tail -40 "$logs/configure$tag.log"; exit 1; }
fi
