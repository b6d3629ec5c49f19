#!/usr/bin/env bash
# Run ON the GPU machine after tools/gpu/build-and-test.sh: every kivi-host mode from the
# configs under configs/ on the GPU (device = "auto" picks it), with the held-out text taken
# from the carried corpus slice. Output: $OUT/modes.log (or ./gpu-logs/modes.log).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
logs=${OUT:-$root/gpu-logs}
mkdir -p "$logs"
host=build-gpu/bin/kivi-host
text="$root/.gpu-deps/shared/data/corpora/austen_persuasion.txt"
work=$(mktemp -d)
status=0
for mode in generate perplexity compare bench; do
  # Absolute paths, since the copy lives elsewhere.
  sed -e "s|\"../models/|\"$root/models/|" -e "s|\"../../shared/data/corpora/austen_persuasion.txt\"|\"$text\"|" \
      -e "s|^json = \"compare.json\"|json = \"$logs/compare-gpu.json\"|" \
      "configs/$mode.toml" > "$work/$mode.toml"
  echo "==> kivi-host $mode (configs/$mode.toml)" | tee -a "$logs/modes.log"
  "$host" --config "$work/$mode.toml" < /dev/null >> "$logs/modes.log" 2>&1 || { status=1; echo "FAILED: $mode" | tee -a "$logs/modes.log"; }
done
tail -c 6000 "$logs/modes.log"
exit $status
