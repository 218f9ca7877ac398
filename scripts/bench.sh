#!/usr/bin/env bash
# Runs every benchmark scenario on this machine and rewrites docs/benchmarks.md with the numbers
# it printed: SSE chat at c = 1, 64, 512 next to the upstream directly (and c = 64 against an
# upstream that paces its tokens, which does not saturate the machine), 5,000 idle WebSockets,
# one Live turn's own overhead, authentication cost, idle RSS, and the unauthenticated attacks
# of the hardening audit (a login flood, silent connections). Takes a few minutes after the
# release build. Then the scale-out scenarios (issue 14), appended to docs/benchmarks.md: SSE chat
# at c = 64 on one instance with SQLite and with PostgreSQL, and through nginx in front of two
# instances in cluster mode (PostgreSQL + Redis), each started here on loopback with temporary
# data (PostgreSQL, Redis and nginx are installed from Debian's packages when missing).
# Last, the reference table (issue 18): wrk, 15 s per point (WRK_SECS), at c = 1, 8, 64 against a
# static nginx+njs OpenAI upstream streaming 20 tokens (scripts/reference/openai_upstream.js),
# nginx as a streaming reverse proxy in front of it, and astrgate on SQLite and on PostgreSQL with
# that upstream as its provider: every chat `{"message":"Hello","username":"bench"}`, a new session
# each, persistence on. Ratios against the proxy are printed beside the numbers.
# Usage: scripts/bench.sh [seconds-per-SSE-run (default 10)]
#        BENCH_ONLY=scale scripts/bench.sh 2     # only the scale-out scenarios (a quick smoke run)
#        BENCH_ONLY=reference WRK_SECS=5 scripts/bench.sh   # only the wrk reference table
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ONLY="${BENCH_ONLY:-all}"
missing=()
pg_bindir() { find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }
[ -x "$(pg_bindir)/initdb" ] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
NJS_MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so
[ -f "$NJS_MODULE" ] || missing+=(libnginx-mod-http-js)
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
# shellcheck source=scripts/loopback.sh
source scripts/loopback.sh
install_missing "the scale-out benchmark"

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
PG_CTL=""
AS_PG=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$PG_CTL" ] && "${AS_PG[@]}" "$PG_CTL" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1 || true
  [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
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
wait_healthy "$GW_PORT" "$WORK/astrgate.log"
sleep 2 # let the server settle, then measure idle RSS before any request
IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
KEY=$("$BIN" --config "$WORK/astrgate.toml" keys create --name bench | tail -n 1)
JWT=$(curl -s "http://127.0.0.1:$GW_PORT/api/auth/login" -H 'Content-Type: application/json' \
  -d '{"username":"astrgate","password":"bench-password-1"}' | sed -E 's/.*"token":"([^"]+)".*/\1/')
# `all` rewrites docs/benchmarks.md; the sections other scripts write (`## Governance…` by
# scripts/bench-metrics.sh, `## Soak` by scripts/soak.sh) are kept and put back last.
awk '/^## / { keep = ($0 ~ /^## (Governance|Soak)/) } keep' docs/benchmarks.md >"$WORK/kept-sections.md"
if [ "$ONLY" = all ]; then
"$BENCH" all \
  --astrgate "http://127.0.0.1:$GW_PORT" --upstream "http://127.0.0.1:$UP_PORT/v1" \
  --key "$KEY" --jwt "$JWT" --pid "$GW_PID" --idle-rss-kib "$IDLE_RSS" --fixed-provider-ms 40 \
  --paced-upstream "http://127.0.0.1:$PACED_PORT/v1" --paced-token-ms 5 \
  --duration "$SECS" --out docs/benchmarks.md
fi
echo "astrgate log lines: $(wc -l <"$WORK/astrgate.log")"

# ---- Scale-out: SQLite vs PostgreSQL on one instance, two instances behind nginx (c = 64) ----
PG_CTL="$(pg_bindir)/pg_ctl"
if [ "$(id -u)" -eq 0 ]; then AS_PG=(runuser -u postgres --); chown postgres "$WORK"; chmod 755 "$WORK"; fi
PG_PORT=$(free_port)
"${AS_PG[@]}" "$(pg_bindir)/initdb" -D "$WORK/pg" -U astrgate --auth=trust -E UTF8 >"$WORK/initdb.log"
# Durable commits, as in production; sized for the pools of two instances.
"${AS_PG[@]}" "$PG_CTL" -D "$WORK/pg" -l "$WORK/pg.log" -w start \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=256MB" >/dev/null
"$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U astrgate astrgate
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log" --dir "$WORK"
PG_URL="postgres://astrgate@127.0.0.1:$PG_PORT/astrgate"

# An instance on port $1 with data dir $2 and extra top-level TOML $3 (before any section), the
# rest of its configuration from $4 (default: the main one).
start_instance() {
  local port=$1 dir=$2 extra=$3 base=${4:-$WORK/astrgate.toml}
  mkdir -p "$dir"
  { echo "listen = \"127.0.0.1:$port\""; echo "data_dir = \"$dir/data\""; echo "$extra"
    sed -e '/^listen = /d' -e '/^data_dir = /d' "$base"; } >"$dir/astrgate.toml"
  "$BIN" --config "$dir/astrgate.toml" serve 2>"$dir/astrgate.log" &
  PIDS+=($!)
  wait_healthy "$port" "$dir/astrgate.log"
}
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
if [ "$ONLY" != reference ]; then
# Runs the c = 64 SSE scenario against $1 with key $2; prints the astrgate row.
sse64() {
  "$BENCH" sse --astrgate "$1" --upstream "http://127.0.0.1:$UP_PORT/v1" --key "$2" -c 64 -d "$SECS" | sed -n 4p
}
SQLITE_ROW=$(sse64 "http://127.0.0.1:$GW_PORT" "$KEY")
kill "$GW_PID" 2>/dev/null || true

PG1_PORT=$(free_port)
start_instance "$PG1_PORT" "$WORK/pg1" "database_url = \"$PG_URL\""
PG_KEY=$("$BIN" --config "$WORK/pg1/astrgate.toml" keys create --name bench | tail -n 1)
PG_ROW=$(sse64 "http://127.0.0.1:$PG1_PORT" "$PG_KEY")
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

A_PORT=$(free_port); B_PORT=$(free_port); LB_PORT=$(free_port)
CLUSTER="database_url = \"$PG_URL\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT\""
start_instance "$A_PORT" "$WORK/a" "$CLUSTER"
start_instance "$B_PORT" "$WORK/b" "$CLUSTER"
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  upstream astrgate { least_conn; server 127.0.0.1:$A_PORT; server 127.0.0.1:$B_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$LB_PORT;
    location / {
      proxy_pass http://astrgate;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
NGINX
"$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>"$WORK/nginx/stderr.log" &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$LB_PORT/healthz" >/dev/null && break; sleep 0.1; done
LB_ROW=$(sse64 "http://127.0.0.1:$LB_PORT" "$PG_KEY")

{
  echo
  echo "## Scale-out: SQLite vs PostgreSQL, and two instances behind nginx"
  echo
  echo "SSE chat at c = 64 for ${SECS} s, the same fake upstream (20 tokens at once) and the same persistence (session, question, reply, run log), on this one machine: one instance on SQLite; one instance on PostgreSQL $("$(pg_bindir)/postgres" --version | awk '{print $3}') (over loopback TCP, default durability); two instances in cluster mode (PostgreSQL + Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2)) behind nginx $("$NGINX_BIN" -v 2>&1 | cut -d/ -f2) (\`least_conn\`, \`proxy_buffering off\`). Two instances on one two-core machine share its cores with PostgreSQL, Redis, nginx and the load generator, so this row measures the cost of the extra hops, not the gain of a second machine."
  echo
  echo "| target | c | req/s | errors | first token p50 ms | first token p99 ms | complete p50 ms | complete p90 ms | complete p99 ms | first event p50 ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  echo "${SQLITE_ROW/through astrgate/one instance, SQLite}"
  echo "${PG_ROW/through astrgate/one instance, PostgreSQL}"
  echo "${LB_ROW/through astrgate/two instances (cluster) behind nginx}"
} >"$WORK/scale.md"
fi
# Everything but the two fake upstreams stops here, so the reference runs alone.
for p in "${PIDS[@]:2}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done

# ---- Reference: wrk against a bare nginx+njs upstream, nginx proxying it, and astrgate ----
WRK_SECS="${WRK_SECS:-15}"
NJS_PORT=$(free_port); PROXY_PORT=$(free_port); REF_SQ_PORT=$(free_port); REF_PG_PORT=$(free_port)
mkdir -p "$WORK/ref"
cat >"$WORK/ref/nginx.conf" <<NGINX
load_module $NJS_MODULE;
worker_processes auto;
daemon off;
pid $WORK/ref/nginx.pid;
error_log $WORK/ref/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/ref/body;
  proxy_temp_path $WORK/ref/proxy;
  js_path $PWD/scripts/reference;
  js_import up from openai_upstream.js;
  upstream njs { server 127.0.0.1:$NJS_PORT; keepalive 128; }
  # The upstream: a fixed 20-token SSE reply to every completion request.
  server {
    listen 127.0.0.1:$NJS_PORT;
    location /v1/chat/completions { js_content up.completions; }
  }
  # A streaming reverse proxy in front of it: keep-alive upstream connections, no buffering.
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / {
      proxy_pass http://njs;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
"$NGINX_BIN" -p "$WORK/ref" -c "$WORK/ref/nginx.conf" 2>"$WORK/ref/stderr.log" &
PIDS+=($!)
for _ in $(seq 50); do curl -sf -X POST "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" -o /dev/null && break; sleep 0.1; done
# astrgate's default provider is that upstream; everything else at its defaults.
cat >"$WORK/ref/astrgate.toml" <<TOML
[dashboard]
password = "bench-password-1"
[server]
max_connections_per_ip = 0
[[providers]]
id = "njs"
base_url = "http://127.0.0.1:$NJS_PORT/v1"
model = "fake"
default = true
TOML
start_instance "$REF_SQ_PORT" "$WORK/ref/sqlite" "" "$WORK/ref/astrgate.toml"
REF_SQ_PID=${PIDS[-1]}
REF_SQ_KEY=$("$BIN" --config "$WORK/ref/sqlite/astrgate.toml" keys create --name bench | tail -n 1)
REF_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$REF_SQ_PID/status)
REF_PG_URL="postgres://astrgate@127.0.0.1:$PG_PORT/astrgate_ref"
"$(pg_bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U astrgate astrgate_ref
start_instance "$REF_PG_PORT" "$WORK/ref/pg" "database_url = \"$REF_PG_URL\"" "$WORK/ref/astrgate.toml"
REF_PG_PID=${PIDS[-1]}
REF_PG_KEY=$("$BIN" --config "$WORK/ref/pg/astrgate.toml" keys create --name bench | tail -n 1)
REF_PG_IDLE_RSS=$(awk '/VmRSS/ {print $2}' /proc/$REF_PG_PID/status)

OPENAI_BODY='{"model":"fake","stream":true,"messages":[{"role":"user","content":"Hello"}]}'
CHAT_BODY='{"message":"Hello","username":"bench"}'
# One wrk point: URL, connections, body, key, a string every good reply contains.
# Prints "req/s p50 p90 p99 max (µs) socket-errors bad-replies".
wrk_point() {
  local threads=$(( $2 < 2 ? 1 : 2 ))
  WRK_BODY=$3 WRK_KEY=$4 WRK_EXPECT=$5 wrk -t"$threads" -c"$2" -d"${WRK_SECS}s" --timeout 10s \
    -s scripts/reference/post.lua "$1" | awk '/^RESULT/ {$1 = ""; print substr($0, 2)}'
  sleep 1
}
# "req/s, p50 x ms, p99 y ms" from a wrk_point line, with any failure shown.
cell() {
  awk '{ s = sprintf("%\047d req/s, p50 %.2f ms, p99 %.2f ms", $1, $2 / 1000, $4 / 1000)
         if ($6 + $7 > 0) s = s sprintf(" (**%d socket errors, %d bad replies**)", $6, $7)
         print s }' <<<"$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.3f×", x[1] / y[1] }'; }
REF_ROWS=()
for c in 1 8 64; do
  DIRECT=$(wrk_point "http://127.0.0.1:$NJS_PORT/v1/chat/completions" "$c" "$OPENAI_BODY" "" "[DONE]")
  PROXY=$(wrk_point "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" "$c" "$OPENAI_BODY" "" "[DONE]")
  SQ=$(wrk_point "http://127.0.0.1:$REF_SQ_PORT/api/v1/chat" "$c" "$CHAT_BODY" "$REF_SQ_KEY" '"type":"end"')
  PG=$(wrk_point "http://127.0.0.1:$REF_PG_PORT/api/v1/chat" "$c" "$CHAT_BODY" "$REF_PG_KEY" '"type":"end"')
  REF_ROWS+=("| $c | $(cell "$DIRECT") | $(cell "$PROXY") | $(cell "$SQ") | $(cell "$PG") | $(ratio "$SQ" "$PROXY") / $(ratio "$PG" "$PROXY") |")
  echo "${REF_ROWS[-1]}"
done
REF_RSS=$(awk '/VmRSS/ {print $2}' /proc/$REF_SQ_PID/status)
REF_PG_RSS=$(awk '/VmRSS/ {print $2}' /proc/$REF_PG_PID/status)
{
  echo
  echo "## Against a bare reverse proxy (wrk)"
  echo
  echo "wrk $(wrk -v 2>&1 | awk 'NR == 1 {print $2}'), ${WRK_SECS} s per point, one after another on this machine (wrk, nginx and astrgate share the two cores). The upstream is nginx $("$NGINX_BIN" -v 2>&1 | cut -d/ -f2) with njs $(dpkg-query -W -f='${Version}' libnginx-mod-http-js 2>/dev/null | cut -d- -f1) (\`worker_processes auto\`) answering every \`POST /v1/chat/completions\` with the same 20-token SSE reply (\`scripts/reference/openai_upstream.js\`); the proxy is the same nginx proxying to it (\`proxy_buffering off\`, keep-alive upstream connections). The upstream and the proxy get an OpenAI streaming request; astrgate gets \`POST /api/v1/chat\` with \`{\"message\":\"Hello\",\"username\":\"bench\"}\` and an API key, so every chat is a new session stored with its question, reply and run log, on SQLite (the default configuration) or on PostgreSQL $("$(pg_bindir)/postgres" --version | awk '{print $3}') (loopback TCP, durable commits). wrk counts a reply as bad unless it is a 200 containing \`[DONE]\` (upstream, proxy) or \`\"type\":\"end\"\` (astrgate). Latency is wrk's, request sent to reply complete."
  echo
  echo "| c | upstream direct | nginx streaming reverse proxy | astrgate, SQLite | astrgate, PostgreSQL | astrgate ÷ proxy (SQLite / PostgreSQL) |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${REF_ROWS[@]}"
  echo
  echo "astrgate's RSS: $(awk -v k="$REF_IDLE_RSS" 'BEGIN {printf "%.1f", k / 1024}') MiB idle and $(awk -v k="$REF_RSS" 'BEGIN {printf "%.1f", k / 1024}') MiB after these runs on SQLite; $(awk -v k="$REF_PG_IDLE_RSS" 'BEGIN {printf "%.1f", k / 1024}') and $(awk -v k="$REF_PG_RSS" 'BEGIN {printf "%.1f", k / 1024}') MiB on PostgreSQL."
} >"$WORK/reference.md"

if [ "$ONLY" = all ]; then
  cat "$WORK/scale.md" "$WORK/reference.md" >>docs/benchmarks.md
  if [ -s "$WORK/kept-sections.md" ]; then { echo; cat "$WORK/kept-sections.md"; } >>docs/benchmarks.md; fi
fi
cat "$WORK/scale.md" "$WORK/reference.md" 2>/dev/null || true
[ "$ONLY" = all ] && cat docs/benchmarks.md || true
