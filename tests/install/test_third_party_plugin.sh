#!/usr/bin/env bash
# A third-party plugin's whole life against an installed kivi: install kivi into a temporary
# prefix, build examples/<plugin> out of tree with find_package(kivi), drop the module into the
# installed plugin folder, see it in `kivi-host plugins` (nothing refused), then use it:
#   fp8-cache:     compare puts fp8 beside fp16, KIVI-4 and KIVI-2 on the bundled Llama
#                  (model loaded once);
#   qwen3-family:  its golden test against transformers' Qwen3ForCausalLM, and kivi-host
#                  generate on the fixture checkpoint.
# The installed core is not rebuilt or changed (its checksum is compared before and after).
# usage: test_third_party_plugin.sh <kivi build dir> <kivi source dir> fp8-cache|qwen3-family
set -euo pipefail
build_dir=$1 source_dir=$2 plugin=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
core_before=$(sha256sum "$work"/prefix/lib/libkivi_core.so.* | sort)

cmake -S "$source_dir/examples/$plugin" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
cp "$work/build/plugins/lib$plugin.so" "$work/prefix/lib/kivi/plugins/"
host="$work/prefix/bin/kivi-host"

listing=$("$host" plugins 2>&1)
echo "$listing"
if grep -q "refused" <<<"$listing"; then echo "a plugin was refused"; exit 1; fi

case "$plugin" in
  fp8-cache)
    grep -Eq "^kv_cache +fp8 +1\.0\.0 +$work/prefix/lib/kivi/plugins/libfp8-cache\.so" <<<"$listing"
    grep -Eq "^attention +fp8 " <<<"$listing"
    out=$("$host" --config "$source_dir/examples/fp8-cache/compare-fp8.toml" \
          --set perplexity.progress=false 2>&1)
    echo "$out"
    grep -q "compare: model loaded once; 4 variants" <<<"$out"
    for v in fp16 fp8 kivi-4 kivi-2; do grep -Eq "^$v +" <<<"$out"; done
    # fp8 stores 8 bits and a float32 scale per 64-element head: between KIVI-4 and fp16 in bytes,
    # and close to fp16 in top-1 agreement.
    grep -Eq "^fp8 +fp8 +fp8 " <<<"$out"
    awk '$1 == "fp8" { if ($7 < 95.0) { print "fp8 top-1 agreement " $7 "% < 95%"; exit 1 } }' <<<"$out"
    ;;
  qwen3-family)
    grep -Eq "^model_family +qwen3 +1\.0\.0 +$work/prefix/lib/kivi/plugins/libqwen3-family\.so" <<<"$listing"
    fixture="$source_dir/examples/qwen3-family/fixture/qwen3-tiny"
    "$work/build/qwen3_golden" "$work/prefix/lib/kivi/plugins" "$fixture"
    cat > "$work/run.toml" <<TOML
mode = "generate"
[model]
path = "$fixture"
[generate]
prompt_ids = [[190, 5, 17, 42]]
max_new_tokens = 8
TOML
    "$host" --config "$work/run.toml" | tee "$work/generate.log"
    grep -q "family qwen3" "$work/generate.log"
    ;;
  *) echo "unknown plugin $plugin"; exit 2 ;;
esac
[ "$core_before" = "$(sha256sum "$work"/prefix/lib/libkivi_core.so.* | sort)" ]
echo "third-party plugin $plugin: OK"
