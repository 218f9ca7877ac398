#!/usr/bin/env bash
# Runs the server from source on a fresh machine: installs the Debian/Ubuntu packages the build
# links against when missing (libopus-dev, libclang-dev), then `cargo run --release`. Arguments go
# to astrgate (e.g. `scripts/serve.sh --config astrgate.toml`). State lives in ./data (SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
missing=()
build_deps
install_missing "the build"
exec cargo run --release --locked -- "$@"
