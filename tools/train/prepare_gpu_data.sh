#!/usr/bin/env bash
# Gather what train_models.py needs on the GPU machine (which has neither the shared data
# nor the network) into the git-ignored .train-data/ of the checkout, to be carried there.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
src="${1:-$root/../shared/data/corpora}"
rm -rf "$root/.train-data"
mkdir -p "$root/.train-data/corpora" "$root/.train-data/tokenizer"
cp "$src"/*.txt "$root/.train-data/corpora/"
cp "$root/models/tokenizer/tokenizer.json" "$root/models/tokenizer/tokenizer_config.json" "$root/.train-data/tokenizer/"
chmod -R u+w "$root/.train-data"
du -sh "$root/.train-data"
