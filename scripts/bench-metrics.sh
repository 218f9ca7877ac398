#!/usr/bin/env bash
# What governance costs on the hot path: SSE chat and /v1/chat/completions at c = 64 through
# astrgate with per-key limits and Prometheus metrics off (a key without limits, `[metrics] listen`
# unset) and on (a key with all three limits, set high enough never to refuse, so every request
# takes its bucket token, every run its slot and its day's token check; `[metrics] listen` set),
# in alternating rounds on the same machine (the
# fake upstream streams 20 tokens at once, as in scripts/bench.sh). Prints each round's rows, and
# each setting's mean throughput and the server's CPU time per request (steadier than throughput
# when other work shares the machine); /metrics is scraped once a second during the "on" rounds,
# as a Prometheus server would (more often than its default 15 s).
# Usage: scripts/bench-metrics.sh [seconds-per-run (default 10)] [rounds (default 3)]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
ROUNDS="${2:-3}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --locked -p astrgate -p astrgate-bench
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN=$TARGET/release/astrgate
BENCH=$TARGET/release/astrgate-bench
WORK=$(mktemp -d)
# shellcheck source=scripts/loopback.sh
source scripts/loopback.sh
UP_PORT=$(free_port)
GW_PORT=$(free_port)
METRICS_PORT=$(free_port)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The recording alone, without HTTP.
"$BENCH" metrics

"$BENCH" fake-upstream --listen "127.0.0.1:$UP_PORT" --tokens 20 2>"$WORK/upstream.log" &
PIDS+=($!)

# One server with metrics off ($1 = off) or on ($1 = on); prints its pid.
start() {
  local dir="$WORK/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/astrgate.toml" <<TOML
listen = "127.0.0.1:$GW_PORT"
data_dir = "$dir/data"
[dashboard]
password = "bench-password-1"
[server]
max_connections_per_ip = 0
[runs]
max_active = 4096
[[providers]]
id = "fake"
base_url = "http://127.0.0.1:$UP_PORT/v1"
model = "fake"
TOML
  if [ "$1" = on ]; then printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$METRICS_PORT" >>"$dir/astrgate.toml"; fi
  # Its stdout must not be this function's (the caller reads that until it closes).
  "$BIN" --config "$dir/astrgate.toml" serve >/dev/null 2>"$dir/astrgate.log" &
  local pid=$!
  wait_healthy "$GW_PORT" "$dir/astrgate.log" || return 1
  echo "$pid"
}

declare -A SSE OPENAI CPU
TICKS=$(getconf CLK_TCK)
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    pid=$(start "$mode")
    PIDS+=("$pid")
    limits=()
    if [ "$mode" = on ]; then
      limits=(--requests-per-minute 100000000 --concurrent-runs 100000 --tokens-per-day 1000000000000)
    fi
    key=$("$BIN" --config "$WORK/$mode/astrgate.toml" keys create --name bench "${limits[@]}" | tail -n 1)
    scraper=""
    if [ "$mode" = on ]; then
      (while sleep 1; do curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null || true; done) &
      scraper=$!
    fi
    cpu_before=$(cpu_ticks "$pid")
    out=$("$BENCH" sse --astrgate "http://127.0.0.1:$GW_PORT" --upstream "http://127.0.0.1:$UP_PORT/v1" \
      --key "$key" -c 64 -d "$SECS" --openai)
    [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
    cpu=$(( $(cpu_ticks "$pid") - cpu_before ))
    echo "round $round, limits and metrics $mode:"
    echo "$out"
    # Rows: | scenario | c | req/s | …: the astrgate SSE row is the 4th line, the OpenAI row the 6th.
    SSE[$mode]="${SSE[$mode]:-} $(echo "$out" | sed -n 4p | awk -F'|' '{gsub(/ /, "", $4); print $4}')"
    OPENAI[$mode]="${OPENAI[$mode]:-} $(echo "$out" | sed -n 6p | awk -F'|' '{gsub(/ /, "", $4); print $4}')"
    # The server's CPU time per request served (both scenarios): less sensitive than throughput
    # to other work on the machine.
    requests=$(( ($(echo "${SSE[$mode]}" | awk '{print $NF}') + $(echo "${OPENAI[$mode]}" | awk '{print $NF}')) * SECS ))
    CPU[$mode]="${CPU[$mode]:-} $(( cpu * 1000000 / TICKS / requests ))"
    echo "server CPU: $(( cpu * 1000 / TICKS )) ms for about $requests requests"
    if [ "$mode" = on ]; then
      curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^astrgate_http_requests_total\{route="/api/v1/chat"' || true
    fi
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
done
mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }' <<<"$1"; }
for mode in off on; do
  echo "limits and metrics $mode: SSE chat req/s${SSE[$mode]} (mean $(mean "${SSE[$mode]}")); /v1/chat/completions req/s${OPENAI[$mode]} (mean $(mean "${OPENAI[$mode]}")); server CPU µs/request${CPU[$mode]} (mean $(mean "${CPU[$mode]}"))"
done
