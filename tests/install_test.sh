#!/bin/bash
# Installs the build tree into a temporary prefix and builds two consumers
# against it: one with find_package(mpxx), one with pkg-config.
set -euo pipefail
build_dir=$1
consumer_src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build_dir" --prefix "$tmp/prefix" >/dev/null
# The license travels with the package.
grep -q "MIT License" "$tmp/prefix/share/doc/mpxx/LICENSE"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$consumer_src" -B "$tmp/build" "${generator[@]}" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/build" >/dev/null
"$tmp/build/consumer"
pcdir=$(dirname "$(find "$tmp/prefix" -name mpxx.pc | head -1)")
c++ -std=c++20 "$consumer_src/main.cpp" -o "$tmp/consumer-pc" \
  $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs mpxx) -rdynamic
LD_LIBRARY_PATH="$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=libdir mpxx)" "$tmp/consumer-pc"
echo "install test: find_package and pkg-config consumers built and ran"
