#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, libFuzzer through cargo-fuzz) for a while each,
# starting from the committed corpora in fuzz/corpus/<target> and adding what they find there.
# Usage: scripts/fuzz.sh [seconds-per-target (default 60)] [target…]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); libFuzzer's flags are nightly-only, so the
# stable toolchain is asked to accept them (RUSTC_BOOTSTRAP=1). A crash leaves its input in
# fuzz/artifacts/<target>/ and stops the script with the failing target named.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)
cd fuzz
# The release build of every target first (one build, then each run starts at once).
cargo fuzz build --release --sanitizer none
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${SECS} s"
  cargo fuzz run --release --sanitizer none "$t" "corpus/$t" -- \
    -max_total_time="$SECS" -max_len=8192 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread '.*' panicked)" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz: $t found a crash: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
