#!/usr/bin/env bash
# Run ON the GPU machine, from the repository root, with .gpu-hf/ carried (made here by
# tools/gpu/gather-hf-wheels.sh). Installs transformers 5.17.0 and the QuantizedCache backend (quanto)
# into /tmp/hf-py (HF_PY overrides) without network, then checks that they import:
#   bash tools/gpu/install-hf-wheels.sh && export PYTHONPATH=/tmp/hf-py
# Of several wheels of one package, it takes the newest whose tags and Requires-Python fit the
# running python3 (PYTHON overrides), judged by the carried `packaging` wheel itself. It installs
# with `pip install --no-index --no-deps --target` where pip exists (HF_INSTALL=zip forces the
# other way), else by unzipping the wheels (a wheel is a zip of its install tree).
set -euo pipefail
src=${1:-.gpu-hf}
dest=${HF_PY:-/tmp/hf-py}
python=${PYTHON:-python3}
[ -d "$src" ] || { echo "install-hf-wheels: no $src/ here (carry it; tools/gpu/gather-hf-wheels.sh makes it)" >&2; exit 1; }

# What the interpreter has before (informational: $dest comes first on PYTHONPATH).
"$python" - <<'PY'
import importlib.metadata as md, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"
print(f"python {sys.version.split()[0]} at {sys.executable}")
print("already there: " + ", ".join(f"{n} {version(n)}" for n in
      ("torch", "numpy", "transformers", "optimum-quanto", "pip")))
PY

rm -rf "$dest"
mkdir -p "$dest"
HF_INSTALL=${HF_INSTALL:-auto} "$python" - "$src" "$dest" <<'PY'
import glob, os, shutil, subprocess, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheels = sorted(glob.glob(os.path.join(src, "*.whl")))
sys.path.insert(0, next(w for w in wheels if os.path.basename(w).startswith("packaging-")))  # zipimport
from packaging.specifiers import SpecifierSet
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

rank = {tag: i for i, tag in enumerate(sys_tags())}  # lower = more specific to this interpreter
here = ".".join(map(str, sys.version_info[:3]))
chosen = {}
for path in wheels:
    name, version, _, tags = parse_wheel_filename(os.path.basename(path))
    fit = [rank[t] for t in tags if t in rank]
    if not fit:
        continue
    with zipfile.ZipFile(path) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = next((l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Python:")), "")
    if requires and not SpecifierSet(requires).contains(here, prereleases=True):
        continue
    if name in ("tomli", "exceptiongroup") and sys.version_info >= (3, 11):  # needed below 3.11 only
        continue
    key = (version, -min(fit))
    if name not in chosen or key > chosen[name][0]:
        chosen[name] = (key, path)
paths = sorted(p for _, p in chosen.values())
print(f"{len(paths)} of {len(wheels)} wheels fit Python {here}:", " ".join(os.path.basename(p).split("-")[0] for p in paths))

mode = os.environ["HF_INSTALL"]
has_pip = mode != "zip" and subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
if has_pip:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--target", dest, *paths], check=True)
else:
    for path in paths:
        with zipfile.ZipFile(path) as z:
            z.extractall(dest)
    # A wheel's NAME.data/{purelib,platlib}/ belongs in site-packages too (none of ours has one).
    for data in glob.glob(os.path.join(dest, "*.data")):
        for lib in ("purelib", "platlib"):
            if os.path.isdir(os.path.join(data, lib)):
                shutil.copytree(os.path.join(data, lib), dest, dirs_exist_ok=True)
        shutil.rmtree(data)
print(f"installed into {dest} with {'pip' if has_pip else 'zipfile'}")
PY

# The checks: transformers from $dest, with torch and numpy from the interpreter, the compiled
# wheels, and the quanto backend as transformers sees it. (quanto compiles its
# C++/CUDA extension only when first used: hf_decode_bench.py --quanto-unpack.)
PYTHONPATH="$dest${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$dest" <<'PY'
import os, sys
dest = os.path.realpath(sys.argv[1])
try:
    import numpy
except ImportError:
    sys.exit("install-hf-wheels: this python3 has no numpy; gather with WITH_NUMPY=1 PYVERS=3.X")
import regex, safetensors, tokenizers, yaml  # the compiled ones
import torch, transformers
from transformers.utils import is_optimum_quanto_available
import optimum.quanto  # QuantizedCache(backend="quanto")
assert os.path.realpath(transformers.__file__).startswith(dest + os.sep), transformers.__file__
assert is_optimum_quanto_available()
print(f"ok: transformers {transformers.__version__} ({os.path.dirname(transformers.__file__)}), "
      f"torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), "
      f"numpy {numpy.__version__}, optimum-quanto imports")
PY
echo "use: export PYTHONPATH=$dest"
