#!/bin/sh
# Builds the engine fuzzers with clang, writes fresh seed corpora and fuzzes each target for N
# seconds, one after the other (niced).
# Usage: tests/fuzz/run_engine_fuzz.sh [SECONDS=20] [TARGET...]
#   TARGET: fuzz_tokenizer, fuzz_chat_template, fuzz_schema, fuzz_tok_load (default: all four)
#   BUILD=dir overrides build-fuzz; WYE_FUZZ_VOCAB_DIR overrides ../shared/vocab.
# Crash inputs, if any, are written to the current directory as crash-*/timeout-*/leak-*.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$src/build-fuzz}
secs=${1:-20}
[ $# -gt 0 ] && shift
targets=${*:-fuzz_tokenizer fuzz_chat_template fuzz_schema fuzz_tok_load}
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DWYE_FUZZ=ON >/dev/null
# shellcheck disable=SC2086
ninja -C "$build" $targets
seeds=$(mktemp -d /tmp/engine-seeds.XXXXXX)
python3 "$src/tests/fuzz/gen_engine_seeds.py" "$seeds" "$src/../shared"
for t in $targets; do
    corpus=$(mktemp -d "/tmp/$t-corpus.XXXXXX")
    dict=
    case $t in
    fuzz_tokenizer) seed=$seeds/tokenizer max_len=16384 ;;
    fuzz_chat_template) seed=$seeds/chat_template max_len=16384 ;;
    fuzz_schema) seed=$seeds/schema max_len=4096 dict=-dict=$seeds/schema.dict ;;
    fuzz_tok_load) seed=$seeds/tok_load max_len=4096; mkdir -p "$seed" ;; # recipes: no seeds
    *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    nice "$build/tests/fuzz/$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 \
        -max_len="$max_len" $dict "$corpus" "$seed"
    echo "$t: no failure in $secs s (corpus kept in $corpus)"
done
