#!/bin/sh
# Builds the GGUF fuzzer with clang, writes a fresh seed corpus and fuzzes for N seconds.
# Usage: tests/fuzz/run_gguf_fuzz.sh [SECONDS=20]   (BUILD=dir overrides build-fuzz)
# Crash inputs, if any, are written to the current directory as crash-*.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$src/build-fuzz}
secs=${1:-20}
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DWYE_FUZZ=ON >/dev/null
ninja -C "$build" fuzz_gguf gguf_seeds
corpus=$(mktemp -d /tmp/gguf-corpus.XXXXXX)
"$build/tests/fuzz/gguf_seeds" "$corpus"
"$build/tests/fuzz/fuzz_gguf" -max_total_time="$secs" -rss_limit_mb=1024 "$corpus"
echo "fuzz_gguf: no failure in $secs s (corpus kept in $corpus)"
