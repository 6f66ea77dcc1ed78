#!/usr/bin/env bash
# What the gateway adds: p50/p99 latency and time to first byte of chat requests sent
# (a) straight to the stand-in upstream (tests/stub's wye-stub-upstream), (b) through wye, and
# (c) through the Portkey AI gateway (npm @portkey-ai/gateway, when npm can install it), and
# (d) through nginx as a plain reverse proxy (when installed: apt-get install nginx-light), at
# 1, 16 and 64 concurrent clients, all in one run so the ratios are comparable on a noisy
# machine. nginx parses nothing and forwards bytes on one worker process: what it adds is the
# floor for any gateway in front of this upstream on this machine (an extra hop, its sockets
# and wake-ups, its share of the CPUs).
# Streamed requests for all three targets, then non-streamed ones (stream:false) for all three.
# Then how many concurrent WebSocket streams one wye process holds, and its memory per stream.
#
# usage: bash bench/gateway.sh [--requests N] [--no-portkey] [--no-nginx]
#                              [--ws-streams N,N,...] [--ws-idle M] [--build DIR] [--paced D]
#                              [--quick]
#   --requests N     measured requests per point (default 2000; 200 warm-up ones before each)
#   --ws-streams L   stream counts for the WebSocket capacity runs, a fresh wye for each
#                    (default 250,1000; the stub upstream holds at most 1024 connections)
#   --ws-idle M      with the last count, also M idle WebSocket connections (default 10000)
#   --build DIR      build directory (default build-bench, configured Release here)
#   --paced D        an upstream paced like a model: streamed answers send their 8 deltas D ms
#                    apart, non-streamed ones answer after 7*D ms (the stub's #stub directive),
#                    so the machine is mostly idle and "added" is time spent in the gateway,
#                    not CPU queueing; use fewer --requests (1 client: N * 7 * D ms per point)
#   --quick          200 requests per point, 100 streams: checks the harness in seconds
#
# Portkey note: @portkey-ai/gateway 1.15.2 with the @hono/node-server npm resolves today
# (1.19.x) fails every streamed request with "TypeError: immutable": its streaming path builds
# `new Response(stream, upstreamResponse)`, and @hono/node-server >= 1.14.x's lightweight
# Response keeps the upstream's (immutable) Headers object by reference instead of copying it,
# so Portkey's later headers.append() throws. @hono/node-server 1.13.8 copies them, so the
# install below pins it with an npm override. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=2000
portkey=1
nginx=1
ws_list=250,1000
ws_idle=10000
build=build-bench
paced=0
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --no-portkey) portkey=0; shift ;;
    --no-nginx) nginx=0; shift ;;
    --ws-streams) ws_list=$2; shift 2 ;;
    --ws-idle) ws_idle=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --paced) paced=$2; shift 2 ;;
    --quick) requests=200; ws_list=100; ws_idle=500; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
warm=200
build=$(cd "$build" 2>/dev/null && pwd || echo "$PWD/$build")
if [ ! -f $build/build.ninja ]; then
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DWYE_TESTS=OFF >/dev/null
fi
ninja -C $build wye wye-stub-upstream wye-bench-http wye-bench-ws >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
tmp=$(mktemp -d /tmp/wye-bench-gw.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; return 1
}

# Limits raised for the capacity runs: client connections, upstream connections, file handles.
cat > "$tmp/wye.lua" <<'EOF'
return {
    log_level = "warn",
    upstream = { max_connections = 10000, max_retries = 0 },
    limits = { connections_max = 100000 },
}
EOF

up_port=$(free_port)
$build/wye-stub-upstream --port "$up_port" --quiet >/dev/null & pids+=($!)
wait_port "$up_port"

# wye runs from a copy in the temp dir, in that dir: its default ledger (wye-ledger.jsonl,
# written per request) goes there, and `wye serve` finds no test model to serve locally (it
# looks in ./models, ../shared/models and beside the source tree holding its binary), so it is
# remote-only and "auto" requests go upstream: this measures the remote path.
cp "$build/wye" "$tmp/wye"
start_wye() { # sets wye_port and wye_pid
  wye_port=$(free_port)
  (cd "$tmp" && exec ./wye serve -c wye.lua --listen 127.0.0.1:$wye_port \
    --upstream http://127.0.0.1:$up_port/v1 --upstream-model stub >"wye.$wye_port.log" 2>&1) &
  wye_pid=$!
  pids+=($wye_pid)
  wait_port "$wye_port"
}
start_wye

pk_port=""
if [ $portkey = 1 ]; then
  pkdir=$build/portkey
  pkjs=$pkdir/node_modules/@portkey-ai/gateway/build/start-server.js
  if [ ! -f $pkjs ] || ! grep -q '"version": "1.13.8"' $pkdir/node_modules/@hono/node-server/package.json 2>/dev/null; then
    mkdir -p $pkdir
    cat > $pkdir/package.json <<'EOF'
{"name":"wye-bench-portkey","private":true,
 "dependencies":{"@portkey-ai/gateway":"1.15.2"},
 "overrides":{"@hono/node-server":"1.13.8"}}
EOF
    (cd $pkdir && npm install --silent --no-audit --no-fund >/dev/null 2>&1) || true
  fi
  if [ -f $pkjs ]; then
    pk_port=$(free_port)
    node $pkjs --port=$pk_port >"$tmp/portkey.log" 2>&1 &
    pk_pid=$!
    pids+=($pk_pid)
    wait_port "$pk_port"
  else
    echo "portkey: could not be installed with npm; skipping it" >&2
  fi
fi

# nginx 1.22 (Debian's nginx-light) as a reverse proxy with the settings a streaming proxy
# needs: HTTP/1.1 keep-alive to the upstream, no response or request buffering (each SSE
# chunk is forwarded when it arrives), no access log; one worker process, like wye's one lws
# thread (wye's upstream and ledger threads come on top of that).
ngx_port=""
if [ $nginx = 1 ] && command -v nginx >/dev/null; then
  ngx_port=$(free_port)
  mkdir -p "$tmp/nginx"
  cat > "$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    upstream stub { server 127.0.0.1:$up_port; keepalive 256; }
    server {
        listen 127.0.0.1:$ngx_port;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://stub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
  nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>"$tmp/nginx/stderr.log" &
  ngx_pid=$!
  pids+=($ngx_pid)
  wait_port "$ngx_port"
elif [ $nginx = 1 ]; then
  echo "nginx: not installed (apt-get install nginx-light); skipping the plain-proxy floor" >&2
fi

client=$build/wye-bench-http
prompt="one two three four five six seven eight"
pk_hdr=(--header "x-portkey-provider: openai" --header "x-portkey-custom-host: http://127.0.0.1:$up_port/v1"
        --header "Authorization: Bearer sk-bench")
echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/^Mem:/{print $2}') GiB"
echo "# requests per point: $requests (after $warm warm-up); the stub streams 8 deltas; all on 127.0.0.1"
if [ "$paced" != 0 ]; then
  echo "# paced upstream: deltas $paced ms apart (streamed), the answer after $((7 * paced)) ms (non-streamed)"
  warm=$((warm < requests / 4 ? warm : requests / 4))
fi
# One target at one concurrency: warm up, then measure. Prints one JSON line.
# For wye, also the CPU time its process used per measured request (user + system, from
# /proc/PID/stat, so every thread counts: lws, upstream, ledger writer).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The CPU time the hypervisor stole from this VM between two /proc/stat "cpu" lines, as a
# fraction of all of it: above a few percent, a point measures the neighbours too.
steal_frac() {
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); t = 0
    for (i = 2; i <= 9; i++) t += y[i] - x[i]
    printf "%.3f", (t > 0 ? (y[9] - x[9]) / t : 0) }'
}
point() { # label stream(0/1) conc url [extra args...]
  local label=$1 stream=$2 c=$3 url=$4; shift 4
  local mode=() t0=0
  [ "$stream" = 1 ] || mode=(--no-stream)
  $client --url "$url" -c "$c" -n $warm -p "$prompt" "${mode[@]}" "$@" --timeout-ms 5000 >/dev/null 2>&1 || true
  [ "$label" != wye ] || t0=$(cpu_ticks "$wye_pid")
  local st0 st1
  st0=$(head -1 /proc/stat)
  $client --label "$label" --url "$url" -c "$c" -n "$requests" -p "$prompt" "${mode[@]}" "$@" \
    --timeout-ms 5000 --json | tee -a "$tmp/results.jsonl" || true
  st1=$(head -1 /proc/stat)
  echo "{\"label\":\"steal\",\"target\":\"$label\",\"stream\":$([ "$stream" = 1 ] && echo true || echo false),\"concurrency\":$c,\"fraction\":$(steal_frac "$st0" "$st1")}" \
    | tee -a "$tmp/results.jsonl"
  if [ "$label" = wye ]; then
    python3 -c "import sys; t = int(sys.argv[1]) - int(sys.argv[2]); print('{\"label\":\"wye-cpu\",\"stream\":%s,\"concurrency\":%s,\"cpu_us_per_req\":%.1f}' % (sys.argv[3], sys.argv[4], t * 1e6 / int(sys.argv[5]) / int(sys.argv[6])))" \
      "$(cpu_ticks "$wye_pid")" "$t0" "$([ "$stream" = 1 ] && echo true || echo false)" "$c" "$(getconf CLK_TCK)" "$requests" \
      | tee -a "$tmp/results.jsonl"
  fi
}
for stream in 1 0; do
  if [ "$paced" != 0 ]; then
    # the #stub directive as the whole user message (no newline: the client takes one line)
    if [ $stream = 1 ]; then prompt="#stub n=8 delay_ms=$paced"; else prompt="#stub n=8 first_byte_delay_ms=$((7 * paced))"; fi
  fi
  for c in 1 16 64; do
    point direct $stream $c http://127.0.0.1:$up_port/v1/chat/completions --model stub
    point wye $stream $c http://127.0.0.1:$wye_port/v1/chat/completions
    if [ -n "$pk_port" ]; then
      point portkey $stream $c http://127.0.0.1:$pk_port/v1/chat/completions --model stub "${pk_hdr[@]}"
    fi
    if [ -n "$ngx_port" ]; then
      point nginx $stream $c http://127.0.0.1:$ngx_port/v1/chat/completions --model stub
    fi
  done
done
if [ -n "$pk_port" ]; then
  kill "$pk_pid" 2>/dev/null || true
fi
# nginx keeps up to 256 idle connections to the stub, which would take stub connection slots
# from the WebSocket runs below
if [ -n "$ngx_port" ]; then
  kill "$ngx_pid" 2>/dev/null || true
  wait "$ngx_pid" 2>/dev/null || true
fi
kill "$wye_pid" 2>/dev/null || true
wait "$wye_pid" 2>/dev/null || true

# WebSocket capacity: a fresh wye per count so each RSS delta starts from the same state.
IFS=, read -r -a ws_counts <<<"$ws_list"
for i in "${!ws_counts[@]}"; do
  n=${ws_counts[$i]}
  idle=0
  [ "$i" -lt $((${#ws_counts[@]} - 1)) ] || idle=$ws_idle
  start_wye
  sleep 0.5
  $build/wye-bench-ws --port "$wye_port" --pid "$wye_pid" --streams "$n" --idle "$idle" --json \
    | tee -a "$tmp/results.jsonl" || true
  kill "$wye_pid" 2>/dev/null || true
  wait "$wye_pid" 2>/dev/null || true
done

# The tables: what wye and Portkey add to the direct latency at each point, and their ratio.
python3 - "$tmp/results.jsonl" <<'EOF'
import json, sys
pts, ws, cpu, steal = {}, [], {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["label"] == "ws-capacity":
        ws.append(r)
    elif r["label"] == "steal":
        k = (r["stream"], r["concurrency"])
        steal[k] = max(steal.get(k, 0.0), r["fraction"])
    elif r["label"] == "wye-cpu":
        cpu[(r["stream"], r["concurrency"])] = r["cpu_us_per_req"]
    else:
        pts[(r["stream"], r["concurrency"], r["label"])] = r
def f(v):
    return f"{v:.3f}"
for stream in (True, False):
    print()
    print(f"{'streamed' if stream else 'non-streamed'} (ms; added = target - direct at the same "
          "percentile; failed = requests that did not complete within 5 s; TCP connections = "
          "opened by the client for the measured requests; wye CPU = its process's user + "
          "system time per measured request; steal = the most CPU time the hypervisor took from this "
          "VM during any of the row's measurements: above a few percent, the row measures the "
          "neighbours too)")
    print("| conc | direct p50 / p99 / ttfb p50 | wye p50 / p99 / ttfb p50 | wye adds p50 / p99 | "
          "portkey p50 / p99 / ttfb p50 | portkey adds p50 / p99 | wye added / portkey added p50 / p99 | "
          "nginx p50 / p99 | nginx adds p50 / p99 | "
          "req/s d/w/p/n | failed d/w/p/n | TCP connections d/w/p/n | wye CPU µs/req | steal |")
    print("|---:|---|---|---|---|---|---|---|---|---|---|---|---:|---:|")
    for c in (1, 16, 64):
        d, w, p, n = (pts.get((stream, c, k)) for k in ("direct", "wye", "portkey", "nginx"))
        if not d:
            continue
        def trip(x):
            return f"{f(x['lat_p50_ms'])} / {f(x['lat_p99_ms'])} / {f(x['ttfb_p50_ms'])}" if x else "-"
        def add(x):
            return (f"{f(x['lat_p50_ms'] - d['lat_p50_ms'])} / {f(x['lat_p99_ms'] - d['lat_p99_ms'])}"
                    if x else "-")
        def ratio(k):
            if w and p and p[k] - d[k] > 0:
                return f"{(w[k] - d[k]) / (p[k] - d[k]):.3f}"
            return "-"
        fails = "/".join(str(x["failed"]) if x else "-" for x in (d, w, p, n))
        rps = "/".join(f"{x['req_per_s']:.0f}" if x else "-" for x in (d, w, p, n))
        conns = "/".join(str(x.get("connects", "-")) if x else "-" for x in (d, w, p, n))
        ngx = f"{f(n['lat_p50_ms'])} / {f(n['lat_p99_ms'])}" if n else "-"
        print(f"| {c} | {trip(d)} | {trip(w)} | {add(w)} | {trip(p)} | {add(p)} | "
              f"{ratio('lat_p50_ms')} / {ratio('lat_p99_ms')} | {ngx} | {add(n)} | {rps} | {fails} | {conns} | "
              f"{cpu.get((stream, c), '-')} | "
              + (f"{100 * steal[(stream, c)]:.1f}%" if (stream, c) in steal else "-") + " |")
for r in ws:
    print()
    print(f"WebSocket: {r['streams_live']}/{r['streams_requested']} streams live, "
          f"{r['bytes_per_stream'] / 1024:.1f} KiB RSS per stream "
          f"(RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB)"
          + (f"; {r['idle_open']}/{r['idle_requested']} idle connections, "
             f"{r['bytes_per_idle_conn'] / 1024:.1f} KiB each (RSS -> {r['rss_after_idle_kib']} KiB)"
             if r["idle_requested"] else ""))
EOF
