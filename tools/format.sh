#!/usr/bin/env bash
# Formats the tree's C++ and CUDA sources with the project's .clang-format (third_party/ aside):
#   tools/format.sh           rewrite the files in place
#   tools/format.sh --check   change nothing; list the files that differ and exit 1 (CTest's
#                             format_check runs this, so CI fails on an unformatted change)
# Formatting differs between clang-format versions, so it takes version 14 (Debian 12's) only;
# without it, or outside a git checkout, the check exits 77 (CTest: skipped).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
check=0
[ "${1:-}" = "--check" ] && check=1
skip() {
  echo "format check skipped: $*"
  exit 77
}
formatter=""
for candidate in clang-format-14 clang-format; do
  if command -v "$candidate" > /dev/null &&
     "$candidate" --version | grep -Eq 'version 14\.'; then
    formatter=$candidate
    break
  fi
done
[ -n "$formatter" ] || skip "clang-format 14 not found (other versions format differently)"
git rev-parse --is-inside-work-tree > /dev/null 2>&1 || skip "not a git checkout"
mapfile -t files < <(git ls-files -- '*.cpp' '*.h' '*.cu' '*.cuh' ':!:third_party/**')
if [ "$check" = 0 ]; then
  printf '%s\0' "${files[@]}" | xargs -0 "$formatter" -i
  echo "formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  "$formatter" --dry-run -Werror "$f" > /dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "${#bad[@]} of ${#files[@]} files are not formatted (run tools/format.sh):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "all ${#files[@]} files formatted"
