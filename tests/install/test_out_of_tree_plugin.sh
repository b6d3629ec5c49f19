#!/usr/bin/env bash
# Installs kivi into a temporary prefix, builds examples/out-of-tree-plugin against it with
# find_package(kivi), drops the module into the installed plugin folder, and checks that the
# installed kivi-host loads it. The installed core is not rebuilt (its checksum is compared).
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
core_before=$(sha256sum "$work"/prefix/lib/libkivi_core.so.* | sort)

cmake -S "$source_dir/examples/out-of-tree-plugin" -B "$work/example" -G Ninja \
      -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/example" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
cp "$work/example/plugins/libexample-attention.so" "$work/prefix/lib/kivi/plugins/"

output=$("$work/prefix/bin/kivi-host" plugins 2>&1)
echo "$output"
grep -Eq "^attention +example +1\.0\.0 +$work/prefix/lib/kivi/plugins/libexample-attention\.so" <<<"$output"
grep -Eq "^kv_cache +fp16 " <<<"$output"
if grep -q "refused" <<<"$output"; then echo "a plugin was refused"; exit 1; fi
[ "$core_before" = "$(sha256sum "$work"/prefix/lib/libkivi_core.so.* | sort)" ]

# The installed host uses the example plugin through the config, options included.
cat > "$work/run.toml" <<TOML
mode = "check"
[cache]
backend = "fp32"
[attention]
backend = "example"
scale_multiplier = 1.0
TOML
"$work/prefix/bin/kivi-host" --config "$work/run.toml"
echo "out-of-tree plugin: OK"
