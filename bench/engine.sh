#!/usr/bin/env bash
# Local engine speed: writes random-weight GGUF models with the real shapes of SmolLM2-135M,
# Qwen2.5-0.5B and TinyLlama-1.1B (wye mkmodel) in each quantization type, runs
# `wye bench -t T -p 128 -n 64 -r 3 --json` on each, and, when bench/llamacpp has been
# installed (cd bench/llamacpp && npm install), llama.cpp on the same file through
# node-llama-cpp (bench/llamacpp/bench.mjs, same method). Both engines run back to back on each
# file so their ratio comes from one moment of a noisy machine. Prints the raw JSON lines,
# then a table: pp and tg tokens/s, pp/tg, wye's roofline fraction, the CPU time the hypervisor
# stole during wye's generation runs, and wye/llama.cpp ratios.
#
# usage: bash bench/engine.sh [--types Q8_0,Q4_0[,Q4_K]] [--shapes a,b,c] [-t 2] [-r 3]
#                             [--build DIR] [--no-llamacpp] [--clean] [--quick]
#   models are kept in DIR/models (default build-bench/models, ~3 GB for all nine; never in
#   git); --clean deletes them at the end. --quick: SmolLM2 Q8_0 only, 1 run.
set -euo pipefail
cd "$(dirname "$0")/.."
types=Q8_0,Q4_0
shapes=tinyllama-1.1b,qwen2.5-0.5b,smollm2-135m
threads=2
runs=3
build=build-bench
llamacpp=1
clean=0
while [ $# -gt 0 ]; do
  case "$1" in
    --types) types=$2; shift 2 ;;
    --shapes) shapes=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    -r) runs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-llamacpp) llamacpp=0; shift ;;
    --clean) clean=1; shift ;;
    --quick) types=Q8_0; shapes=smollm2-135m; runs=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ ! -f $build/build.ninja ]; then
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DWYE_TESTS=OFF >/dev/null
fi
ninja -C $build wye >/dev/null
nlc=bench/llamacpp
if [ $llamacpp = 1 ] && [ ! -d $nlc/node_modules/node-llama-cpp ]; then
  echo "# llama.cpp: bench/llamacpp is not installed (cd bench/llamacpp && npm install); skipping it" >&2
  llamacpp=0
fi
models=$build/models
mkdir -p $models
out=$(mktemp /tmp/wye-bench-engine.XXXXXX)
trap 'rm -f "$out"; if [ $clean = 1 ]; then rm -rf "$models"; fi' EXIT

echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/^Mem:/{print $2}') GiB"
echo "# wye bench -t $threads -p 128 -n 64 -r $runs --json; llama.cpp: node $nlc/bench.mjs (same)"
steal0=$(head -1 /proc/stat)
IFS=, read -r -a shape_list <<<"$shapes"
IFS=, read -r -a type_list <<<"$types"
for shape in "${shape_list[@]}"; do
  for type in "${type_list[@]}"; do
    f=$models/$shape-$type.gguf
    if [ ! -s "$f" ]; then
      $build/wye mkmodel --shape "$shape" --type "$type" -o "$f.tmp" >/dev/null
      mv "$f.tmp" "$f"
    fi
    line=$($build/wye bench -m "$f" -t $threads -p 128 -n 64 -r $runs --json)
    echo "$line"
    echo "wye $shape $type $line" >>"$out"
    if [ $llamacpp = 1 ]; then
      if line=$(node $nlc/bench.mjs -m "$f" -t $threads -p 128 -n 64 -r $runs --json); then
        echo "$line"
        echo "llamacpp $shape $type $line" >>"$out"
      else
        echo "# llama.cpp failed on $f" >&2
      fi
    fi
  done
done

steal1=$(head -1 /proc/stat)
python3 - "$out" "$steal0" "$steal1" <<'EOF'
import json, sys
def ticks(line):
    v = [int(x) for x in line.split()[1:9]]
    return sum(v), v[7]
(t0, s0), (t1, s1) = ticks(sys.argv[2]), ticks(sys.argv[3])
print(f"# cpu steal over the whole run: {100 * (s1 - s0) / max(t1 - t0, 1):.1f}% of the machine's "
      "CPU time (the hypervisor running other guests; the steal column: wye's generation only)")
rows = {}
for line in open(sys.argv[1]):
    eng, shape, typ, js = line.split(" ", 3)
    rows.setdefault((shape, typ), {})[eng] = json.loads(js)
print()
print("tok/s are medians of the runs, [min-max] after them; ratios are wye / llama.cpp on medians, "
      "and on the best runs in parentheses")
print("| model | type | wye pp | wye tg | pp/tg | roofline (vs best bw) | GB/s read of measured | "
      "steal | llama.cpp pp | llama.cpp tg | pp ratio | tg ratio |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
def rng(x, k):
    return f"{x[k]:.1f} [{x[k + '_min']:.1f}-{x[k + '_max']:.1f}]"
for (shape, typ), r in rows.items():
    w = r.get("wye")
    l = r.get("llamacpp")
    cells = [shape, typ]
    if w:
        cells += [rng(w, "pp_tok_s"), rng(w, "tg_tok_s"),
                  f"{w['pp_tok_s'] / w['tg_tok_s']:.2f}",
                  f"{100 * w['roofline_fraction']:.0f}% "
                  f"({100 * w.get('roofline_fraction_vs_best_membw', w['roofline_fraction']):.0f}%)",
                  f"{w['tg_read_bytes_s'] / 1e9:.1f} of {w['membw_bytes_s'] / 1e9:.1f}",
                  f"{100 * w['tg_cpu_steal']:.1f}%" if w.get("tg_cpu_steal", -1) >= 0 else "?"]
    else:
        cells += ["-"] * 6
    if l:
        cells += [rng(l, "pp_tok_s"), rng(l, "tg_tok_s")]
        if w:
            for k in ("pp_tok_s", "tg_tok_s"):
                cells.append(f"{w[k] / l[k]:.2f} ({w[k + '_max'] / l[k + '_max']:.2f})")
        else:
            cells += ["-", "-"]
    else:
        cells += ["-"] * 4
    print("| " + " | ".join(cells) + " |")
EOF
