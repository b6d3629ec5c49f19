#!/usr/bin/env bash
# Run HERE (the development machine, which reaches PyPI). Gathers into .gpu-hf/ (git-ignored,
# carried by the device tool) the wheels that tools/bench/hf_decode_bench.py needs on the GPU
# machine beyond what torch brings there; tools/gpu/install-hf-wheels.sh installs them there
# without network.
#
# What is needed, from the packages' own metadata (Requires-Dist):
#   transformers 5.17.0    huggingface-hub, numpy, packaging, pyyaml, regex, tokenizers, typer,
#                          safetensors, tqdm
#   huggingface-hub 1.33.0 click, filelock, fsspec, hf-xet (x86_64), httpx, packaging, pyyaml,
#                          tqdm, typing-extensions (+ tomli on Python < 3.11)
#   httpx 0.28.1           anyio, certifi, httpcore (-> h11), idna (anyio: + exceptiongroup < 3.11)
#   typer                  pydantic (-> pydantic-core, annotated-types, typing-inspection),
#                          shellingham, rich (-> markdown-it-py -> mdurl, pygments), annotated-doc
#   optimum-quanto 0.2.7   torch, ninja, numpy, safetensors, huggingface-hub: transformers'
#                          QuantizedCache backend "quanto", the one that can quantize like KIVI
#                          (keys per channel, values per token)
#   pytest 9.2.0           iniconfig, packaging, pluggy, pygments: the kivi package's tests on the
#                          GPU (tools/gpu/run-python.sh)
# The other backend, hqq, is left out: PyPI has only its source, and it cannot group keys per
# channel (hf_decode_bench.py explains).
# Left out unless FULL=1 (about 16 MB more), to stay under ~30 MB for four Pythons:
#   typer and its closure (pydantic-core alone is 2.3 MB per Python): only transformers' command
#   line (transformers/cli/) imports typer, not `import transformers` nor the models;
#   hf-xet (4.3 MB): huggingface-hub uses it only to download Xet-stored files (no network there).
# Never carried: torch and what torch itself requires (filelock, fsspec, jinja2, sympy, ...), and
# ninja (the GPU image has it). numpy neither unless WITH_NUMPY=1: about 16 MB per Python would
# not fit, and the GPU image has numpy.
# Version-specific wheels come for every Python in PYVERS (default "3.10 3.11 3.12 3.13"; the GPU
# image's python3 was 3.12.3 when last seen). Pins follow the project venv where it has them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.gpu-hf"
pyvers=${PYVERS:-"3.10 3.11 3.12 3.13"}
pip=(python3 -m pip)
[ -x "$root/.venv/bin/python" ] && pip=("$root/.venv/bin/python" -m pip)

# Pure-Python or abi3 wheels, the same for every Python.
common=(transformers==5.17.0 huggingface_hub==1.33.0 tokenizers==0.23.2 safetensors==0.8.0
        packaging==26.4 tqdm==4.70.1 typing_extensions==4.16.0 click==8.5.1 httpx==0.28.1
        httpcore==1.0.9 h11==0.16.0 anyio==4.16.0 idna==3.20 certifi==2026.10.19.post1
        optimum-quanto==0.2.7 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0)
if [ "${FULL:-0}" = 1 ]; then
  common+=(hf-xet==1.8.0 pydantic==2.14.4 annotated-types==0.8.0 typing-inspection==0.4.5
           rich==15.0.0 pygments==2.21.0 markdown-it-py==4.3.0 mdurl==0.1.2 shellingham==1.5.4)
fi
# Per Python version: compiled wheels, and pure ones whose newest release needs Python >= 3.11.
per_version() {
  echo pyyaml==6.0.4
  case $1 in
    3.10) echo regex==2026.9.29 tomli==2.5.0 exceptiongroup==1.3.2 ;;
    *) echo regex==2026.11.19 ;;
  esac
  if [ "${FULL:-0}" = 1 ]; then
    echo pydantic-core==2.50.5
    case $1 in 3.10) echo typer==0.29.1 annotated-doc==0.0.6 ;; *) echo typer==0.29.2 annotated-doc==0.0.7 ;; esac
  fi
  if [ "${WITH_NUMPY:-0}" = 1 ]; then
    case $1 in 3.10) echo numpy==2.2.6 ;; *) echo numpy==2.3.5 ;; esac
  fi
}

rm -rf "$out"
mkdir -p "$out"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for v in $pyvers; do
  # shellcheck disable=SC2207
  reqs=("${common[@]}" $(per_version "$v"))
  echo "== Python $v"
  "${pip[@]}" download -q --no-deps --only-binary=:all: --implementation cp --python-version "$v" \
    "${platforms[@]}" -d "$out" "${reqs[@]}"
done

find "$out" -name '*.whl' -printf '  %6k KB  %f\n' | sort -k3
echo "$(find "$out" -name '*.whl' | wc -l) wheels, $(du -sb "$out" | awk '{printf "%.1f MB", $1 / 1e6}') in $out"
