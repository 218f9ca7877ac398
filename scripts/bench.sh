#!/usr/bin/env bash
# Runs every benchmark scenario on this machine and rewrites docs/benchmarks.md with the numbers
# it printed: SSE chat at c = 1, 64, 512 next to the upstream directly (and c = 64 against an
# upstream that paces its tokens, which does not saturate the machine), 5,000 idle WebSockets,
# one Live turn's own overhead, authentication cost, idle RSS, and the unauthenticated attacks
# of the hardening audit (a login flood, silent connections). Takes a few minutes after the
# release build. Usage: scripts/bench.sh [seconds-per-SSE-run (default 10)]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --locked -p astrgate -p astrgate-bench
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN=$TARGET/release/astrgate
BENCH=$TARGET/release/astrgate-bench
WORK=$(mktemp -d)
UP_PORT=18080
GW_PORT=18081
PACED_PORT=18082
# A stale server on one of these ports would silently take the place of ours and skew every number.
for port in $UP_PORT $GW_PORT $PACED_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench: port $port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Fake providers: the LLM streams 20 tokens at once; STT and TTS answer after exactly 20 ms each.
"$BENCH" fake-upstream --listen 127.0.0.1:$UP_PORT --tokens 20 --stt-delay-ms 20 --tts-delay-ms 20 2>"$WORK/upstream.log" &
PIDS+=($!)
# A second LLM that paces its 20 tokens 5 ms apart, for a c = 64 run that does not saturate the machine.
"$BENCH" fake-upstream --listen 127.0.0.1:$PACED_PORT --tokens 20 --token-delay-ms 5 2>"$WORK/paced.log" &
PIDS+=($!)

cat >"$WORK/astrgate.toml" <<TOML
listen = "127.0.0.1:$GW_PORT"
data_dir = "$WORK/data"
[dashboard]
password = "bench-password-1"
[server]
# The load generator opens thousands of connections from one address.
max_connections_per_ip = 0
[runs]
# c = 512 holds more runs at once than the default cap (each run stays registered until its
# log is stored).
max_active = 4096
[[providers]]
id = "fake"
base_url = "http://127.0.0.1:$UP_PORT/v1"
model = "fake"
default = true
[[providers]]
id = "paced"
base_url = "http://127.0.0.1:$PACED_PORT/v1"
model = "fake"
[stt]
type = "openai"
base_url = "http://127.0.0.1:$UP_PORT/v1"
[tts]
type = "openai"
base_url = "http://127.0.0.1:$UP_PORT/v1"
TOML

"$BIN" --config "$WORK/astrgate.toml" serve 2>"$WORK/astrgate.log" &
GW_PID=$!
PIDS+=($GW_PID)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$GW_PORT/healthz" >/dev/null && break
  sleep 0.1
done
sleep 2 # let the server settle, then measure idle RSS before any request
IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
KEY=$("$BIN" --config "$WORK/astrgate.toml" keys create --name bench | tail -n 1)
JWT=$(curl -s "http://127.0.0.1:$GW_PORT/api/auth/login" -H 'Content-Type: application/json' \
  -d '{"username":"astrgate","password":"bench-password-1"}' | sed -E 's/.*"token":"([^"]+)".*/\1/')
"$BENCH" all \
  --astrgate "http://127.0.0.1:$GW_PORT" --upstream "http://127.0.0.1:$UP_PORT/v1" \
  --key "$KEY" --jwt "$JWT" --pid "$GW_PID" --idle-rss-kib "$IDLE_RSS" --fixed-provider-ms 40 \
  --paced-upstream "http://127.0.0.1:$PACED_PORT/v1" --paced-token-ms 5 \
  --duration "$SECS" --out docs/benchmarks.md
echo "astrgate log lines: $(wc -l <"$WORK/astrgate.log")"
cat docs/benchmarks.md
