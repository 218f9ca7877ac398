#!/usr/bin/env bash
# Regenerates the console's screenshots in docs/console/ (shown in the README and docs/console.md):
# runs the console's browser tests (tests/api/console_browser.rs) with CONSOLE_SCREENSHOTS set, so
# the pages are photographed as the tests drive them. Needs what scripts/test.sh installs
# (Chromium, Node, tests/browser/node_modules, espeak-ng, pocketsphinx). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund --silent
export CONSOLE_BROWSER_TESTS=1
export CONSOLE_SCREENSHOTS="$PWD/docs/console"
mkdir -p "$CONSOLE_SCREENSHOTS"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked -E 'test(/console_browser::the_/)'
else
  cargo test --locked --test api console_browser::the_
fi
ls -l "$CONSOLE_SCREENSHOTS"
