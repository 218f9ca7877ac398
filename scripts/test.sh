#!/usr/bin/env bash
# The whole test suite: installs the system packages the tests need (Debian/Ubuntu), then runs
# cargo fmt --check, cargo clippy -D warnings, every test, and the Schemathesis conformance run of
# openapi.json (scripts/schemathesis.sh). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v pocketsphinx_continuous >/dev/null 2>&1 || missing+=(pocketsphinx)
[ -d /usr/share/pocketsphinx/model/en-us/en-us ] || missing+=(pocketsphinx-en-us)
# PDF text extraction (src/documents/pdf.rs) runs pdftotext (under prlimit, from util-linux);
# the PDF tests need it too.
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
# The browser tests (tests/api/browser.rs, tests/api/console_browser.rs) drive AstrBot's WebUI and
# astrgate's console in Debian's Chromium with Node's playwright-core (Node 20 or later).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# The OpenAI SDK test (tests/api/openai_sdk.rs) runs the official `openai` package from a virtualenv,
# and the conformance run (scripts/schemathesis.sh) Schemathesis from another; it talks to the
# server it starts with curl.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The store suite on PostgreSQL and the two-instance tests (PostgreSQL + Redis) need both
# servers; they are started below on loopback ports with temporary data directories.
pg_bindir() { find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }
[ -x "$(pg_bindir)/initdb" ] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
build_deps
install_missing "the build, voice, PDF, browser or OpenAI SDK tests"

# AstrBot 4.29.3's WebUI build, from its wheel on PyPI (downloaded once, never committed).
webui="target/astrbot-webui"
if [ ! -f "$webui/astrbot/dashboard/dist/index.html" ]; then
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --ignore-requires-python \
    astrbot==4.29.3 -d "$webui/wheel"
  python3 - "$webui" <<'PY'
import sys, zipfile, glob
root = sys.argv[1]
wheel = glob.glob(f"{root}/wheel/astrbot-4.29.3-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    z.extractall(root, [n for n in z.namelist() if n.startswith("astrbot/dashboard/dist/")])
PY
fi
export ASTRBOT_WEBUI_DIST="$PWD/$webui/astrbot/dashboard/dist"
[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund --silent
# The web console's browser tests (tests/api/console_browser.rs) need only what is installed above.
export CONSOLE_BROWSER_TESTS=1

# The official OpenAI Python SDK, pinned, in a virtualenv of its own (never committed). The variable
# must not start with ASTRGATE_, which the config loader reads.
pyenv="target/pyenv"
openai_sdk="1.109.1"
if ! "$pyenv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$openai_sdk')" >/dev/null 2>&1; then
  python3 -m venv "$pyenv"
  "$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$openai_sdk"
fi
export OPENAI_SDK_PYTHON="$PWD/$pyenv/bin/python"
# The official Prometheus Python client's text parser reads /metrics in tests/api/metrics.rs.
prom_client="0.26.0"
if ! "$pyenv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('prometheus_client') != '$prom_client')" >/dev/null 2>&1; then
  "$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check "prometheus_client==$prom_client"
fi
export PROM_PARSER_PYTHON="$PWD/$pyenv/bin/python"

# PostgreSQL and Redis, for this run only: temporary data, loopback, free ports, stopped on exit.
# Their URLs go in TEST_* variables (ASTRGATE_* would be read by the config loader); tests that
# need them print "skipped: ..." when they are unset, as under a bare `cargo test`.
services=$(mktemp -d /tmp/astrgate-test-services.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg=$(pg_bindir)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root: the server runs as Debian's postgres user.
  as_pg=(runuser -u postgres --)
  chown postgres "$services"
fi
stop_services() {
  [ -f "$services/pg/postmaster.pid" ] && "${as_pg[@]}" "$pg/pg_ctl" -D "$services/pg" -m fast -w stop >/dev/null 2>&1 || true
  [ -f "$services/redis.pid" ] && kill "$(cat "$services/redis.pid")" 2>/dev/null || true
  rm -rf "$services"
}
trap stop_services EXIT
pg_port=$(free_port)
"${as_pg[@]}" "$pg/initdb" -D "$services/pg" -U astrgate --auth=trust -E UTF8 --no-sync >"$services/initdb.log"
"${as_pg[@]}" "$pg/pg_ctl" -D "$services/pg" -l "$services/pg.log" -w start \
  -o "-p $pg_port -k $services -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" >/dev/null
export TEST_POSTGRES_URL="postgres://astrgate@127.0.0.1:$pg_port/postgres"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$services/redis.pid" --logfile "$services/redis.log" --dir "$services"
export TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi

# openapi.json against the running server: Schemathesis, every phase and every check, two runs
# (dashboard JWT, API key); a few minutes (docs/api/conformance.md).
scripts/schemathesis.sh
