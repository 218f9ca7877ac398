#!/usr/bin/env bash
# The whole test suite: installs the system packages the tests need (Debian/Ubuntu), then runs
# cargo fmt --check, cargo clippy -D warnings and every test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v pocketsphinx_continuous >/dev/null 2>&1 || missing+=(pocketsphinx)
[ -d /usr/share/pocketsphinx/model/en-us/en-us ] || missing+=(pocketsphinx-en-us)
# Build dependencies of the audio codecs (src/audio/codec.rs): libopus to link against, libclang
# for silk-codec's bindgen. LAME and the SILK SDK build from their crates' sources with cc/make.
command -v make >/dev/null 2>&1 || missing+=(make)
for pkg in libopus-dev libclang-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} not installed and apt-get is unavailable; voice tests (or the build) will fail" >&2
  fi
fi

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
