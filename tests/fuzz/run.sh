#!/usr/bin/env bash
# Fuzzes the request pipeline (envelope parse → signature → decrypt → token
# → classify → normalize) with libFuzzer through cargo fuzz.
#   bash tests/fuzz/run.sh [seconds]      default 300
# Crashes are written to tests/fuzz/artifacts/pipeline/ and fail the run.
# cargo fuzz wants a nightly compiler for its sanitizer flags; the machine's
# stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-300}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
export RUSTC_BOOTSTRAP=1
# Work on a copy of the committed corpus so that a run does not churn it;
# `cargo fuzz cmin` folds new finds back in when wanted.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r tests/fuzz/corpus/pipeline/. "$work/"
cargo fuzz run --fuzz-dir tests/fuzz pipeline "$work" tests/fuzz/corpus/pipeline -- \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 25
echo "fuzz: pipeline ran ${seconds}s with 0 crashes"
