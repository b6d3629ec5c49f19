#!/usr/bin/env bash
# Run HERE (it reaches PyPI). Gathers the FlashInfer headers that kivi_attention_bench's peer
# needs (batch decode over a paged cache, plan and run) from the flashinfer-python wheel into
# .gpu-deps/flashinfer/include (git-ignored; the device tool carries .gpu-deps): only the
# include closure of the headers the peer includes, not the wheel. Build with
#   -DKIVI_FLASHINFER_INCLUDE=$PWD/.gpu-deps/flashinfer/include
# (tools/gpu/kernel-loop.sh passes it when the folder exists). Version 0.5.3 by default: from
# 0.6 on, FlashInfer's fastdiv.cuh needs cuda::fast_mod_div from a newer CCCL than the one CUDA
# 13.0 ships (FLASHINFER_VERSION picks another).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
version=${FLASHINFER_VERSION:-0.5.3}
out="$root/.gpu-deps/flashinfer"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps "flashinfer-python==$version" -d "$work" > /dev/null
wheel=$(ls "$work"/flashinfer_python-*.whl)
(cd "$work" && python3 -m zipfile -e "$wheel" x > /dev/null)
rm -rf "$out"
mkdir -p "$out/include"
python3 - "$work/x/flashinfer/data/include" "$out/include" <<'PY'
import os, re, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
roots = ["flashinfer/attention/decode.cuh", "flashinfer/attention/scheduler.cuh",
         "flashinfer/attention/default_decode_params.cuh", "flashinfer/attention/variants.cuh",
         "flashinfer/page.cuh"]
seen, todo = set(), list(roots)
include = re.compile(r'#include\s*[<"]([^>"]+)[>"]')
while todo:
    rel = os.path.normpath(todo.pop())
    if rel in seen or not os.path.exists(os.path.join(src, rel)):
        continue
    seen.add(rel)
    for name in include.findall(open(os.path.join(src, rel), errors="replace").read()):
        for candidate in (os.path.join(os.path.dirname(rel), name), name):
            if os.path.exists(os.path.join(src, os.path.normpath(candidate))):
                todo.append(candidate)
                break
for rel in sorted(seen):
    os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
    shutil.copy(os.path.join(src, rel), os.path.join(dst, rel))
print(f"{len(seen)} headers of flashinfer-python into {dst}")
PY
echo "flashinfer-python $version" > "$out/VERSION"
