#!/usr/bin/env bash
# The bridge against an earlier build of itself, in one run on one machine
# (machines here differ up to threefold, so figures from two runs do not
# compare):
#
#   bash tests/bench/compare.sh [REV] [--rounds N] [--concurrency "1 16 64 256"] [--seconds S]
#                               [--max-cpu-growth PCT] [--smoke]
#   bash tests/bench/compare.sh --smoke     # what CI runs: against tests/bench/BASELINE,
#                                           # 3 rounds at c=16 and 64, 2 s, fails past +25 % CPU
#
# --max-cpu-growth PCT: exit 1 when, at any concurrency, the bridge's
# median CPU per event exceeds the baseline's by more than PCT percent.
# The gate weighs the bridge's CPU in units of the load generator's CPU of
# the same measurement (the same binary doing the same work per request for
# both builds): the machine's speed drifts within one run too (CI printed
# the same load generator at 28.5 µs per request in one round and 43.4 in
# the next, and the bridge's raw figure 58 to 104 µs across three rounds of
# one build), and that drift cancels in the ratio. The raw µs are printed.
#
# Builds REV (default HEAD, i.e. the last commit against the working tree;
# with --smoke, the revision in tests/bench/BASELINE) from `git archive`
# (in the same target directory: only the crate itself is compiled again),
# then runs
# tests/bench/run.sh --quick for both (1 user, no duplicates, the default
# configuration: withdrawals only) in N rounds (default 4) whose order
# alternates, each system on a fresh broker, and prints per concurrency the
# median throughput, p50, p99 and the bridge's CPU per request of each, and
# the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

REV= ROUNDS=4 CONC="1 16 64 256" SECS=4 MAX_GROWTH=
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) ROUNDS=3 CONC="16 64" SECS=2 MAX_GROWTH=${MAX_GROWTH:-25}
             REV=${REV:-$(grep -v '^#' tests/bench/BASELINE | head -n 1)} ;;
    --max-cpu-growth) MAX_GROWTH=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --concurrency) CONC=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) REV=$1 ;;
  esac
  shift
done
REV=${REV:-HEAD}
git rev-parse --verify --quiet "$REV^{commit}" >/dev/null \
  || { echo "compare: no commit $REV here (a shallow clone? git fetch --unshallow)" >&2; exit 1; }

TARGET=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
commit=$(git rev-parse --short "$REV")
echo "== building the baseline $REV ($commit)"
mkdir -p "$WORK/base"
git archive "$REV" | tar -x -C "$WORK/base"
# The same target directory: the dependencies' builds are shared, so only
# the crate itself is compiled for REV. Its binary lands where this tree's
# does; it is copied aside, and run.sh's own build puts this tree's back.
CARGO_TARGET_DIR=$TARGET cargo build --release --locked --quiet \
  --manifest-path "$WORK/base/Cargo.toml" --bin feishu-kafka-bridge
mkdir -p "$TARGET/bench-baseline"
cp "$TARGET/release/feishu-kafka-bridge" "$TARGET/bench-baseline/feishu-kafka-bridge"
export BASELINE_BIN=$TARGET/bench-baseline/feishu-kafka-bridge
cargo build --release --locked --quiet --features bench --bins
cmp -s "$BASELINE_BIN" "$TARGET/release/feishu-kafka-bridge" \
  && ! git diff --quiet "$REV" -- src Cargo.toml Cargo.lock \
  && { echo "compare: the baseline's binary is still in place of this tree's" >&2; exit 1; }

# Each system on a broker of its own (run.sh starts one per call): tansu
# gets slower as it holds more, so the second system on a shared broker
# would pay for the first one's topics.
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="baseline bridge"; else order="bridge baseline"; fi
  echo "== round $round of $ROUNDS: $order"
  for sys in $order; do
    bash tests/bench/run.sh --quick --runs 1 --no-half --no-memory --no-report \
      --seconds "$SECS" --concurrency "$CONC" --systems "$sys" --out "$WORK/round$round.$sys.jsonl"
  done
done

cat "$WORK"/round*.jsonl > "$WORK/all.jsonl"
mkdir -p tests/bench/results && cp "$WORK/all.jsonl" tests/bench/results/compare.jsonl
python3 - "$WORK/all.jsonl" "$commit" "${MAX_GROWTH:-}" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    x = r["result"]
    by.setdefault((r["system"], x["concurrency"]), []).append(x)
med = lambda xs, f: statistics.median(f(x) for x in xs)
cpu = lambda x: x.get("cpu_us_per_request", {}).get("system", float("nan"))
# The bridge's CPU per event in load-generator units (see the header).
def rel(x):
    lg = x.get("cpu_us_per_request", {}).get("loadgen")
    return cpu(x) / lg if lg else float("nan")
print(f"\nbaseline = {sys.argv[2]}, bridge = this tree; medians of {max(len(v) for v in by.values())} rounds")
print(f"{'c':>4} | {'baseline rps':>12} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7} | {'bridge rps':>10} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7} | ratio")
for c in sorted({c for _, c in by}):
    a, b = by.get(("baseline", c), []), by.get(("bridge", c), [])
    if not a or not b:
        continue
    ra, rb = med(a, lambda x: x["throughput_rps"]), med(b, lambda x: x["throughput_rps"])
    print(f"{c:>4} | {ra:>12.0f} {med(a, lambda x: x['p50_ms']):>7.2f} {med(a, lambda x: x['p99_ms']):>7.2f} {med(a, cpu):>7.1f} | "
          f"{rb:>10.0f} {med(b, lambda x: x['p50_ms']):>7.2f} {med(b, lambda x: x['p99_ms']):>7.2f} {med(b, cpu):>7.1f} | {rb / ra:.3f}")
limit = sys.argv[3]
if limit:
    worst = []
    for c in sorted({c for _, c in by}):
        a, b = by.get(("baseline", c), []), by.get(("bridge", c), [])
        if a and b:
            raw = med(b, cpu) / med(a, cpu) - 1
            growth = med(b, rel) / med(a, rel) - 1
            worst.append((growth, c))
            print(f"CPU per event at c={c}: {med(a, cpu):.1f} -> {med(b, cpu):.1f} µs ({raw:+.1%}); "
                  f"in load-generator units {med(a, rel):.2f} -> {med(b, rel):.2f} ({growth:+.1%}; limit +{float(limit):g} %)")
    bad = [(g, c) for g, c in worst if g * 100 > float(limit)]
    if not worst or bad:
        print(f"compare: the bridge's CPU per event (in load-generator units) grew past +{float(limit):g} % against {sys.argv[2]}: {bad}", file=sys.stderr)
        sys.exit(1)
    print(f"compare: CPU per event (in load-generator units) within +{float(limit):g} % of {sys.argv[2]}")
PY
