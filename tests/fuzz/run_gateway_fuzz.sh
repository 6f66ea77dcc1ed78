#!/bin/sh
# Builds the gateway-side fuzzers (tests/fuzz/gateway.cmake) with clang, writes fresh seed
# corpora and fuzzes each target for N seconds, one after the other.
# Usage: tests/fuzz/run_gateway_fuzz.sh [SECONDS=20 [TARGET...]]   (BUILD=dir overrides
# build-fuzz; TARGET is sse, gw_format, chat_req, gw_body or ledger_line; default: all)
# Crash inputs, if any, are written to the current directory as crash-*.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$src/build-fuzz}
secs=${1:-20}
[ $# -gt 0 ] && shift
targets=${*:-sse gw_format chat_req gw_body ledger_line}
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DWYE_FUZZ=ON >/dev/null
ninja -C "$build" gateway_fuzz
corpus=$(mktemp -d /tmp/gateway-corpus.XXXXXX)
"$build/tests/fuzz/gateway_seeds" "$corpus"
for t in $targets; do
    "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=1024 \
        -dict="$corpus/gateway.dict" "$corpus/$t"
    echo "fuzz_$t: no failure in $secs s"
done
echo "corpora kept in $corpus"
