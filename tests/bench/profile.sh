#!/usr/bin/env bash
# Where the bridge's CPU goes, per event, on the real release binary under
# the benchmark's load (tests/bench/loadgen.rs, tansu, default settings):
#
#   bash tests/bench/profile.sh                      # c=1 and c=64
#   options: --concurrency "1 64" --seconds S --no-callgrind
#
# For each concurrency, one fresh bridge and topic:
#   * perf record (cpu-clock, every thread of the bridge, kernel included)
#     while the load generator runs; every sample is put in one bucket by
#     its thread and its leaf function (tests/bench/profile_buckets.py):
#     HTTP, crypto, JSON, dedup, the chat's line, metrics, allocation, the
#     async runtime, the Kafka client's threads and the kernel. The
#     bucket's share of the samples times the CPU the bridge used (from
#     /proc) over the events answered gives µs per event;
#   * context switches per event (every thread's voluntary + involuntary
#     switches, from /proc) and syscalls per event (perf stat's
#     raw_syscalls:sys_enter tracepoint on the process);
# then once (unless --no-callgrind), the same binary under callgrind for
# two request counts: the difference over the difference gives
# instructions and allocations (calls to the global allocator) per event
# with start-up cancelled out. Callgrind counts instructions, so these two
# figures repeat from run to run on one build, whatever the machine does.
#
# Prints a table per concurrency and writes tests/bench/results/profile.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

CONC="1 64" SECS=6 CALLGRIND=1
while [ $# -gt 0 ]; do
  case "$1" in
    --concurrency) CONC=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --no-callgrind) CALLGRIND=0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
[ "$CALLGRIND" = 0 ] || command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind (or --no-callgrind)" >&2; exit 1; }

TANSU=${TANSU_BIN:-/opt/tansu-0.6.0/bin/tansu}
[ -x "$TANSU" ] || { echo "tansu not found at $TANSU: run bash tests/run.sh first (it installs it)" >&2; exit 1; }
mkdir -p tests/bench/results
OUT=$ROOT/tests/bench/results/profile.json
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; [ -n "${PROFILE_KEEP:-}" ] && echo "profile: raw files kept in $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT

source tests/bench/common.sh

POINT=0
start_bridge() { # [wrapper...] -> PID, PORT, ADMIN_PORT, TOPIC
  POINT=$((POINT + 1))
  TOPIC=profile.$POINT.$RANDOM
  create_topics "$TOPIC" "$TOPIC.dlq"
  PORT=$(free_port) ADMIN_PORT=$(free_port)
  spawn_bridge "$BIN/feishu-kafka-bridge" "$WORK/bridge.$POINT.log" "$PORT" "$ADMIN_PORT" "$TOPIC" -- "$@"
  PID=$BRIDGE_PID
  PIDS+=("$PID")
  wait_port "$PORT"
  wait_admin_ready "$ADMIN_PORT"
}
stop_bridge() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
# Voluntary + involuntary context switches of every thread of a process.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
cpu_ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{s += $14 + $15} END {print s + 0}'; }

: > "$WORK/points.jsonl"
for c in $CONC; do
  echo "== concurrency $c"
  start_bridge
  # Warm the process (and the topic's partitions) before measuring.
  "$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$PORT" --concurrency "$c" --requests 2000 --warmup 0 \
    --encrypt-key "$KEY" --token "$TOKEN" --run-id "warm-$RANDOM" >/dev/null
  sw0=$(switches "$PID") t0=$(cpu_ticks "$PID")
  perf record -q -F 1999 -g -p "$PID" -o "$WORK/perf.$c.data" 2>/dev/null &
  PERF=$!
  perf stat -x, -e raw_syscalls:sys_enter -p "$PID" -o "$WORK/stat.$c" 2>/dev/null &
  STAT=$!
  sleep 0.5
  line=$("$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$PORT" --concurrency "$c" --requests 400000 --seconds "$SECS" --warmup 0 \
    --encrypt-key "$KEY" --token "$TOKEN" --run-id "prof-$c-$RANDOM" --brokers "$BROKERS" --topic "$TOPIC" --cpu "bridge=$PID")
  kill -INT "$PERF" "$STAT" 2>/dev/null || true
  wait "$PERF" 2>/dev/null || true
  wait "$STAT" 2>/dev/null || true
  sw1=$(switches "$PID") t1=$(cpu_ticks "$PID")
  stop_bridge
  perf report -i "$WORK/perf.$c.data" --no-children --sort comm,dso,sym -g none --stdio -q --percent-limit 0 2>/dev/null \
    >"$WORK/report.$c.txt" || true
  syscalls=$(awk -F, '/raw_syscalls/ {print $1}' "$WORK/stat.$c" 2>/dev/null | head -n1)
  python3 - "$c" "$line" "${syscalls:-0}" "$((sw1 - sw0))" "$((t1 - t0))" "$(getconf CLK_TCK)" "$WORK/report.$c.txt" "$SECS" >>"$WORK/points.jsonl" <<'PY'
import json, sys
c, line, syscalls, switches, ticks, hz, report, secs = sys.argv[1:]
r = json.loads(line)
ok = r["statuses"].get("200", 0)
# perf and the context-switch and tick counters ran from before the load
# until after it: their per-event figures count the load's own events
# (the measured window is what the load generator reports).
print(json.dumps({
    "concurrency": int(c), "throughput_rps": r["throughput_rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
    "events": ok, "verified": r.get("verified"),
    "cpu_us_per_event": r["cpu_us_per_request"]["bridge"],
    "switches_per_event": int(switches) / ok if ok else None,
    "syscalls_per_event": float(syscalls or 0) / ok if ok else None,
    "report": report,
}))
PY
done

if [ "$CALLGRIND" = 1 ]; then
  echo "== callgrind: instructions and allocations per event (c=1, two request counts)"
  for n in 1000 3000; do
    start_bridge valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$n.out" --dump-instr=no
    "$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$PORT" --concurrency 1 --requests "$n" --warmup 0 \
      --encrypt-key "$KEY" --token "$TOKEN" --run-id "cg-$n-$RANDOM" >/dev/null
    kill -INT "$PID"; wait "$PID" 2>/dev/null || true
    callgrind_annotate --inclusive=no --threshold=100 "$WORK/cg.$n.out" >"$WORK/cg.$n.txt" 2>/dev/null || true
  done
fi

python3 tests/bench/profile_buckets.py "$WORK/points.jsonl" "$WORK" "$OUT"
