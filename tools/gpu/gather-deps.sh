#!/usr/bin/env bash
# Run HERE (the development machine, which reaches Debian's mirrors). Gathers what the GPU
# machine lacks into .gpu-deps/ (git-ignored), which the device tool carries:
#   .gpu-deps/root/      Debian 12 packages unpacked: toml++ 3.3, Catch2 2.13, PCRE2 10.42
#                        headers (+ the library they link), utf8proc 2.8 (static), nlohmann-json,
#                        Gloo's headers (for c10d's ProcessGroupGloo header)
#   .gpu-deps/shared/    two of the tokenizers (llama2, qwen2.5) and a slice of each corpus
#                        from ../shared/data; tests skip what is absent (the device tool
#                        carries 64 MiB at most, the repository included)
# `gather-deps.sh serving` gathers, instead of .gpu-deps/shared/, the Llama 3.1 tokenizer into
# .gpu-deps/llama3.1/ for tools/gpu/run-serving.sh (both would pass the 64 MiB).
# The GPU machine has its own Boost, CUDA, cmake, ninja, g++ and torch 2.11.0+cu130.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.gpu-deps"
packages=(libtomlplusplus-dev catch2 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
          libpcre2-posix3 libutf8proc-dev libutf8proc2 nlohmann-json3-dev libgloo-dev)
rm -rf "$out/debs" "$out/root"
mkdir -p "$out/debs" "$out/root"
(cd "$out/debs" && apt-get download "${packages[@]}" > /dev/null)
for deb in "$out"/debs/*.deb; do dpkg -x "$deb" "$out/root"; done
rm -rf "$out/root/usr/share/doc" "$out/root/usr/share/man" "$out/debs"
# Gloo: its headers only (libtorch holds the code); the dangling libgloo.so link goes.
rm -f "$out/root/usr/lib/libgloo.so"

shared="$root/../shared/data"
rm -rf "$out/llama3.1"
if [ "${1:-tests}" = serving ]; then
  rm -rf "$out/shared"
  mkdir -p "$out/llama3.1"
  cp "$shared/tokenizers/llama3.1/tokenizer.json" "$shared/tokenizers/llama3.1/tokenizer_config.json" "$out/llama3.1/"
elif [ -d "$shared" ]; then
  rm -rf "$out/shared"
  mkdir -p "$out/shared/data"
  mkdir -p "$out/shared/data/tokenizers"
  cp -r "$shared/tokenizers/llama2" "$shared/tokenizers/qwen2.5" "$out/shared/data/tokenizers/"
  cp "$shared/SOURCES.md" "$out/shared/data/"
  mkdir -p "$out/shared/data/corpora"
  for f in "$shared"/corpora/*.txt; do head -c 400000 "$f" > "$out/shared/data/corpora/$(basename "$f")"; done
fi
du -sh "$out"
