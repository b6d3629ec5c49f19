#!/usr/bin/env bash
# SmolLM2's GGUF (98 MB) is over what one device call carries (64 MiB with the working tree),
# and the GPU machine has no network. It can still get there in parts, because a machine stays
# warm (files in /tmp kept) for 30 seconds after a call:
#   here:   tools/gpu/smollm2-parts.sh prepare   # .gpu-part0/ .. .gpu-part3/, one part each (ignored)
#   then back to back on the device, for N = 0..3 (carry [".gpu-partN"]):
#           bash tools/gpu/smollm2-parts.sh receive     # copies the carried part into /tmp
#   last, on the device:  bash tools/gpu/smollm2-parts.sh join   # /tmp/smollm2/...gguf, checked
# Each call must start within the warm window of the one before, or the parts are lost; with
# every part staged beforehand nothing has to happen here between the calls.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
name=SmolLM2-135M-Instruct.Q4_1.gguf
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  # as tools/fetch-smollm2.sh
case "${1:-}" in
  prepare)
    "$root/tools/fetch-smollm2.sh"
    rm -rf "$root"/.gpu-part[0-9]* && tmp=$(mktemp -d)
    split -b 30M -d "$root/models/smollm2/$name" "$tmp/part-"
    for part in "$tmp"/part-*; do
      n=$((10#${part##*-}))
      mkdir -p "$root/.gpu-part$n" && mv "$part" "$root/.gpu-part$n/"
    done
    rmdir "$tmp" && ls "$root"/.gpu-part[0-9]* ;;
  receive)
    mkdir -p /tmp/smollm2-parts && cp "$root"/.gpu-part[0-9]*/part-* /tmp/smollm2-parts/ && ls -la /tmp/smollm2-parts ;;
  join)
    mkdir -p /tmp/smollm2
    cat /tmp/smollm2-parts/part-* > "/tmp/smollm2/$name"
    echo "$want  /tmp/smollm2/$name" | sha256sum -c ;;
  *)
    echo "usage: $0 prepare | receive | join" >&2
    exit 2 ;;
esac
