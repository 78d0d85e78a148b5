#!/usr/bin/env bash
# The bridge's own work per delivery, counted by callgrind on a fixed input
# (tests/bench/instructions.rs: verify, decrypt, parse, route, claim, build
# the message, settle; the five member types and a raw type, every fifth
# event delivered twice). Callgrind counts instructions, not time: the same
# build and input give the same count on any machine, whatever else runs,
# so a small regression shows. The baseline is tests/bench/INSTRUCTIONS.
# The figures are followed by a table per stage (tests/bench/stages.py).
#
#   bash tests/bench/instructions.sh            # print the figures
#   bash tests/bench/instructions.sh --check    # CI: fail past the baseline + 5 %
#   bash tests/bench/instructions.sh --update   # write the baseline; commit it
#                                               # with the change, and say why
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-print}
case "$MODE" in print|--check|--update) ;; *) echo "usage: $0 [--check|--update]" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
BASELINE=tests/bench/INSTRUCTIONS
# Above this ratio to the baseline, --check fails.
LIMIT=1.05
N=2000

cargo build --release --locked --features bench --bin feishu-bench-instructions 2>&1 | tail -n 1
target=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out=$(mktemp)
trap 'rm -f "$out"' EXIT
line=$(valgrind --tool=callgrind --toggle-collect='*measured*' --callgrind-out-file="$out" \
  "$target/release/feishu-bench-instructions" "$N" 2>/dev/null)
total=$(awk '/^totals:/ {print $2}' "$out")
deliveries=$(awk '{print $2}' <<<"$line")
allocations=$(awk '{print $4}' <<<"$line")
instructions=$((total / deliveries))
echo "instructions: $instructions per delivery, $allocations allocations per delivery ($deliveries deliveries, $total instructions)"
# Where they go, stage by stage (docs/benchmarks.md compares builds with it).
python3 tests/bench/stages.py "$out" "$deliveries" 2>/dev/null || echo "instructions: no per-stage table (callgrind_annotate failed)"

case "$MODE" in
  --update)
    printf 'instructions_per_delivery %s\nallocations_per_delivery %s\n' "$instructions" "$allocations" >"$BASELINE"
    echo "instructions: wrote $BASELINE" ;;
  --check)
    python3 - "$BASELINE" "$instructions" "$allocations" "$LIMIT" <<'PY'
import sys
path, instructions, allocations, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
base = dict(line.split() for line in open(path) if line.strip())
failed = False
for name, now in (("instructions_per_delivery", instructions), ("allocations_per_delivery", allocations)):
    was = float(base[name])
    ratio = now / was
    verdict = "ok" if ratio <= limit else "FAILS"
    print(f"instructions: {name} {now} against the baseline's {was:g}: {ratio - 1:+.1%} ({verdict}, limit {limit - 1:+.0%})")
    failed |= ratio > limit
if failed:
    print("instructions: past the limit. If the change is deliberate, run bash tests/bench/instructions.sh --update and commit tests/bench/INSTRUCTIONS with it, saying why.", file=sys.stderr)
    sys.exit(1)
PY
    ;;
esac
