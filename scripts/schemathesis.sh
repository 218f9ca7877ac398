#!/usr/bin/env bash
# Conformance of the running server to openapi.json, checked by Schemathesis: every phase
# (examples, coverage, fuzzing, stateful) and every check, against a debug build of astrgate with
# a temporary data directory and a fake OpenAI-compatible upstream (astrgate-bench fake-upstream:
# chat completions streamed and whole, /audio/speech, /audio/transcriptions). Two runs:
#   1. every operation, with a dashboard JWT (accepted wherever a scope is required);
#   2. every operation an API key may call, with a key holding every scope, made after run 1;
#   3. logout with the dashboard JWT, last, since it revokes every dashboard token.
# The operations that could destroy the harness's own credentials run, but cannot: in runs 1 and
# 2 logout is public and gets no credential, and the account edits never see the password (their
# refusal, 400 `原密码错误`, is expected). Exits non-zero on any failure, or when a run's credential stopped
# working. Schemathesis and its dependencies, pinned in tests/schemathesis/requirements.txt, go
# into a virtualenv under target/ (installed once). Takes about two minutes.
# See docs/api/conformance.md. scripts/test.sh runs this after the Rust tests.
# Usage: scripts/schemathesis.sh [extra `st run` options, e.g. --max-examples 5 or --seed N]
set -euo pipefail
cd "$(dirname "$0")/.."

venv="target/st-venv"
st_version=$(sed -n 's/^schemathesis==//p' tests/schemathesis/requirements.txt)
if [ "$("$venv/bin/st" --version 2>/dev/null)" != "st, version $st_version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/schemathesis/requirements.txt
fi

cargo build --locked -p astrgate -p astrgate-bench
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"

work=$(mktemp -d /tmp/astrgate-schemathesis.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {
  for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "schemathesis: $1 did not answer" >&2
  return 1
}

up_port=$(free_port)
"$bin/astrgate-bench" fake-upstream --listen "127.0.0.1:$up_port" --tokens 5 2>"$work/upstream.log" &
pids+=($!)

gw_port=$(free_port)
base="http://127.0.0.1:$gw_port"
# A random password the fuzzer never sees: the account operations it calls can therefore never
# change the account (they answer 400 `原密码错误`), and the harness's token stays valid.
password="St-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
cat >"$work/astrgate.toml" <<TOML
listen = "127.0.0.1:$gw_port"
data_dir = "$work/data"
[dashboard]
password = "$password"
# The fuzzer sends thousands of logins with wrong passwords: without these the limiter (tested
# on its own in tests/api) would answer nearly all of them with 429 and the login itself would go
# untested, and each failure would wait 3 s.
login_failure_delay_ms = 0
login_rate_limit_burst = 1000000
login_rate_limit_per_sec = 1000000.0
login_failure_budget = 1000000
login_failures_per_min = 1000000
[[providers]]
id = "fake"
base_url = "http://127.0.0.1:$up_port/v1"
model = "fake"
default = true
# A profile that speaks, so that replies are spoken on every front door that can (chat media
# events, /v1/conversation voice) and their parameters (`prefered_format`) are checked.
[[profiles]]
id = "main"
tts = true
default = true
[stt]
type = "openai"
base_url = "http://127.0.0.1:$up_port/v1"
[tts]
type = "openai"
base_url = "http://127.0.0.1:$up_port/v1"
# A webhook bot for /api/v1/im/messages; the fake upstream answers any POST to this path with 200.
[[platforms]]
id = "hook"
type = "webhook"
url = "http://127.0.0.1:$up_port/v1/chat/completions"
TOML
"$bin/astrgate" --config "$work/astrgate.toml" serve 2>"$work/astrgate.log" &
pids+=($!)
wait_for "http://127.0.0.1:$up_port/"
wait_for "$base/healthz"

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][sys.argv[1]])' "$1"; }
token=$(curl -sf "$base/api/v1/auth/login" -H 'Content-Type: application/json' \
  -d "{\"username\":\"astrgate\",\"password\":\"$password\"}" | json_field token)

# Hypothesis keeps its own files (Unicode tables) under target/, not in the working tree.
export HYPOTHESIS_STORAGE_DIRECTORY="$PWD/target/hypothesis"
st() {
  local config=$1
  shift
  timeout 900 "$venv/bin/st" --config-file "$config" run openapi.json --url "$base" "$@"
}
status=0
echo "== schemathesis run 1/3: every operation, with a dashboard JWT"
ST_BEARER="$token" st tests/schemathesis/schemathesis.toml "$@" || status=1

# The key is made only now: the first run creates, revokes and deletes keys at random (every key
# the dashboard lists). It is bound to the username `schemathesis`, so that operations that name
# no user act as that one, as they do for the dashboard JWT (key-run.toml).
key=$(curl -sf "$base/api/v1/api-keys" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"name":"schemathesis","username":"schemathesis","scopes":["bot","provider","persona","im","config","config:edit_admin","chat","chat:admin","data","file","plugin","mcp","skill"]}' |
  json_field api_key)
cat tests/schemathesis/schemathesis.toml tests/schemathesis/key-run.toml >"$work/key-run.toml"
echo "== schemathesis run 2/3: every operation an API key may call, with a key holding every scope"
ST_BEARER="$key" st "$work/key-run.toml" --exclude-by '/x-astrgate-auth == dashboard' "$@" || status=1
# Logout last, with the dashboard token in the header: it revokes every dashboard token, so
# nothing runs after it (runs 1 and 2 call it without credentials). No stateful phase: no link
# leads from one logout to the other.
echo "== schemathesis run 3/3: logout, with the dashboard JWT (revokes it)"
ST_BEARER="$token" st tests/schemathesis/schemathesis.toml --include-path-regex '/auth/logout$' \
  --phases examples,coverage,fuzzing -H "Authorization: Bearer $token" "$@" || status=1
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures above; the server's log follows" >&2
  tail -n 50 "$work/astrgate.log" >&2
fi
exit "$status"
