#!/usr/bin/env bash
# SmolLM2's GGUF (98 MB) is over what one device call carries (64 MiB with the working tree),
# and the GPU machine has no network. It can still get there in parts, because a machine stays
# warm (files in /tmp kept) for 30 seconds after a call:
#   here:   tools/gpu/smollm2-parts.sh prepare      # splits it into .gpu-parts/part-00.. (ignored)
#   then, for each part N, here:  tools/gpu/smollm2-parts.sh stage N   # .gpu-part holds part N
#           and at once on the device (carry [".gpu-part"]):  bash tools/gpu/smollm2-parts.sh receive
#   last, on the device:  bash tools/gpu/smollm2-parts.sh join   # /tmp/smollm2/...gguf, checked
# Each call must start within the warm window of the one before, or the parts are lost.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
name=SmolLM2-135M-Instruct.Q4_1.gguf
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  # as tools/fetch-smollm2.sh
case "${1:-}" in
  prepare)
    "$root/tools/fetch-smollm2.sh"
    rm -rf "$root/.gpu-parts" && mkdir -p "$root/.gpu-parts"
    split -b 30M -d "$root/models/smollm2/$name" "$root/.gpu-parts/part-"
    ls "$root/.gpu-parts" ;;
  stage)
    rm -rf "$root/.gpu-part" && mkdir -p "$root/.gpu-part"
    cp "$root/.gpu-parts/part-$(printf '%02d' "$2")" "$root/.gpu-part/" ;;
  receive)
    mkdir -p /tmp/smollm2-parts && cp "$root"/.gpu-part/part-* /tmp/smollm2-parts/ && ls -la /tmp/smollm2-parts ;;
  join)
    mkdir -p /tmp/smollm2
    cat /tmp/smollm2-parts/part-* > "/tmp/smollm2/$name"
    echo "$want  /tmp/smollm2/$name" | sha256sum -c ;;
  *)
    echo "usage: $0 prepare | stage N | receive | join" >&2
    exit 2 ;;
esac
