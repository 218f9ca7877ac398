#!/usr/bin/env bash
# Soak test: a release astrgate (SQLite) and a fake upstream on loopback, both on free ports with a
# temporary data dir, get `astrgate-bench soak` for N minutes: 500 SSE chats in flight at all
# times, socket churn (chat-socket turns, socket open/ping/close, bare TCP connect/close, fresh
# HTTP connections), uploads with downloads, and OpenAI-door completions, while the server's RSS
# is sampled every 10 s. Fails (non-zero) when any operation failed or RSS after the 3-minute
# warm-up grew more than 10 %. Writes the `## Soak` section of docs/benchmarks.md (replacing the
# old one; the rest of the file is left as it is). Not run by CI.
#
# Bounded: loopback only; every process it starts is killed and the temporary dir removed on exit.
# Disk: each chat turn stores a session row (one per 5 turns), the question, the reply and the
# run's event log, about 2.5 KiB in SQLite; the fake upstream paces its 20 tokens 200 ms apart, so
# the 500 SSE chats finish at most ~125 turns/s (the socket turns add ~8/s). The uploads add at
# most 4 per second of 4–256 KiB (log-uniform, ~60 KiB on average). A 10-minute run wrote 202 MiB
# of database and 144 MiB of attachments (82,700 turns, 2,384 uploads). The script refuses to start
# with less than 2 GiB free where the temporary dir lives.
#
# Usage: scripts/soak.sh [minutes (default 10)]
#        SOAK_NOTE="The machine was busy with …" scripts/soak.sh   # a sentence for the report
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-10}"
if ! [[ "$MINUTES" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/soak.sh [minutes]" >&2
  exit 2
fi
# The warm-up is 3 minutes: the ~500 pooled upstream connections each grow hyper's request
# channel by one block at their 33rd request (~130 s in), a one-time step (docs/performance.md).
# Short smoke runs keep 30 % of their time as warm-up instead.
WARMUP_SECS=$((MINUTES >= 10 ? 180 : MINUTES * 18))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
missing=()
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
# shellcheck source=scripts/loopback.sh
source scripts/loopback.sh
build_deps
install_missing "the build"

cargo build --release --locked -p astrgate -p astrgate-bench
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN=$TARGET/release/astrgate
BENCH=$TARGET/release/astrgate-bench
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

AVAIL_KIB=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
if [ "$AVAIL_KIB" -lt $((2 * 1024 * 1024)) ]; then
  echo "soak: less than 2 GiB free under $WORK; not starting" >&2
  exit 1
fi
# Ports nothing listens on now (the kernel's pick), so no stale server can stand in for ours.
UP_PORT=$(free_port)
GW_PORT=$(free_port)

TOKENS=20
TOKEN_MS=200
"$BENCH" fake-upstream --listen "127.0.0.1:$UP_PORT" --tokens $TOKENS --token-delay-ms $TOKEN_MS 2>"$WORK/upstream.log" &
PIDS+=($!)

cat >"$WORK/astrgate.toml" <<TOML
listen = "127.0.0.1:$GW_PORT"
data_dir = "$WORK/data"
[dashboard]
password = "soak-password-1"
[server]
# Every load-generator connection comes from 127.0.0.1.
max_connections_per_ip = 0
[runs]
# 500 SSE chats plus the socket turns in flight at once (the default cap is 512).
max_active = 2048
[[providers]]
id = "fake"
base_url = "http://127.0.0.1:$UP_PORT/v1"
model = "fake"
default = true
TOML

"$BIN" --config "$WORK/astrgate.toml" serve 2>"$WORK/astrgate.log" &
GW_PID=$!
PIDS+=($GW_PID)
wait_healthy "$GW_PORT" "$WORK/astrgate.log"
KEY=$("$BIN" --config "$WORK/astrgate.toml" keys create --name soak --scopes chat,file | tail -n 1)

STATUS=0
"$BENCH" soak --astrgate "http://127.0.0.1:$GW_PORT" --key "$KEY" --pid "$GW_PID" \
  --minutes "$MINUTES" --warmup-secs "$WARMUP_SECS" --sample-secs 10 --max-growth-pct 10 \
  --upstream-note "streams $TOKENS tokens ${TOKEN_MS} ms apart (about $((TOKENS * TOKEN_MS / 1000)) s per reply, so 500 chats are 500 open streams at any moment)" \
  --machine-note "Load average when the run began: $(cut -d' ' -f1-3 /proc/loadavg). ${SOAK_NOTE:-}" \
  --out "$WORK/soak.md" || STATUS=$?
if [ ! -s "$WORK/soak.md" ]; then
  echo "soak: astrgate-bench wrote no report" >&2
  exit 1
fi

# What the run left on disk and in the server's log.
kib() { du -sk "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
DB_KIB=$(kib "$WORK"/data/astrgate.db*)
ATT_KIB=$(kib "$WORK/data/attachments")
ALL_KIB=$(kib "$WORK/data")
LOG_LINES=$(wc -l <"$WORK/astrgate.log")
LOG_BAD=$(grep -cE ' (WARN|ERROR) ' "$WORK/astrgate.log" || true)
{
  echo
  echo "On disk afterwards: the data dir held $((ALL_KIB / 1024)) MiB — the SQLite database (with its WAL) $((DB_KIB / 1024)) MiB, attachments $((ATT_KIB / 1024)) MiB. The server logged $LOG_LINES lines (info level), $LOG_BAD of them warnings or errors."
  if [ "$LOG_BAD" -gt 0 ]; then
    echo
    echo "The first warnings and errors:"
    echo
    echo '```'
    grep -E ' (WARN|ERROR) ' "$WORK/astrgate.log" | head -n 10
    echo '```'
  fi
} >>"$WORK/soak.md"

# Replace the `## Soak` section (from its heading to the next `## ` heading) and put the new one last.
awk '/^## / { skip = ($0 == "## Soak") } !skip' docs/benchmarks.md |
  awk 'NF == 0 { blank = blank "\n"; next } { printf "%s", blank; blank = ""; print }' >"$WORK/benchmarks.md"
{ cat "$WORK/benchmarks.md"; echo; cat "$WORK/soak.md"; } >docs/benchmarks.md
echo "soak: wrote the Soak section of docs/benchmarks.md (data dir $((ALL_KIB / 1024)) MiB, $LOG_BAD log warnings/errors)"
[ "$LOG_BAD" -eq 0 ] || echo "soak: the server logged warnings or errors; see docs/benchmarks.md" >&2
exit "$STATUS"
