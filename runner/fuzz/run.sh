#!/usr/bin/env bash
# Builds the runner's fuzz targets and runs each for SECONDS (default 30);
# fails on a crash, a panic, a timeout (10 s on one input) or an OOM.
#
#   runner/fuzz/run.sh [SECONDS]
#
# cargo fuzz (libFuzzer) on the stable toolchain. With the sanitizer off (the
# default: the targets are safe Rust; see docs/runner.md) cargo fuzz passes
# only stable rustc flags; RUSTC_BOOTSTRAP=1 is there for
# HERMES_FUZZ_SANITIZER=address, whose -Zsanitizer is nightly-only. Debug
# assertions (and so overflow checks) are on. The build goes to
# $HERMES_CACHE/fuzz-target and the grown corpus to $HERMES_CACHE/fuzz-corpus,
# both outside the repository, so a warm run starts at once and keeps what
# earlier runs found; the seeds in corpus/<target> are read, never written.
# A crashing input lands in runner/fuzz/artifacts/<target>/ (untracked).
set -euo pipefail
secs=${1:-30}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
fuzz_dir=$(cd "$(dirname "$0")" && pwd)
cache=${HERMES_CACHE:-/var/cache/hermes}
export CARGO_TARGET_DIR=${HERMES_FUZZ_TARGET_DIR:-$cache/fuzz-target}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || {
  echo "fuzz: cargo-fuzz is missing (scripts/install-deps installs it)" >&2
  exit 1
}
flags=(--fuzz-dir "$fuzz_dir" --sanitizer "${HERMES_FUZZ_SANITIZER:-none}" --debug-assertions)
cd "$fuzz_dir/.."
cargo fuzz build "${flags[@]}"
mkdir -p "$cache/fuzz-logs"
status=0
for target in $(cargo fuzz list --fuzz-dir "$fuzz_dir"); do
  corpus=$cache/fuzz-corpus/$target
  log=$cache/fuzz-logs/$target.log
  mkdir -p "$corpus"
  echo "fuzz: $target for ${secs}s (corpus $corpus, log $log)"
  if cargo fuzz run "${flags[@]}" "$target" "$corpus" "$fuzz_dir/corpus/$target" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -dict="$fuzz_dir/dict/$target.dict" -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" | tr '\n' ' '
    echo "corpus: $(find "$corpus" -type f | wc -l) inputs"
  else
    status=1
    echo "fuzz: $target FAILED; the end of its log:" >&2
    tail -n 60 "$log" >&2
  fi
done
exit $status
