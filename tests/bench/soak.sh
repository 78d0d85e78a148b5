#!/usr/bin/env bash
# Soak: two replicas (the shared dedup memory on, as deployed) under a
# steady load for a long time, watched every 10 s.
#
#   bash tests/bench/soak.sh                    # 60 minutes at half the peak
#   bash tests/bench/soak.sh --minutes 3        # what CI runs
#   options: --minutes M --rate R (requests/s; default half the peak, measured
#            first on a bridge of its own) --interval S --dedup-capacity N
#            (default: what the rate brings in half the warm-up, at least a
#            minute's worth, at most 1,000,000, so that the memory is full,
#            and flat, by the warm-up's end) --warmup-minutes W (default 10, or a third of a shorter run)
#            --out DIR (default tests/bench/results)
#            --kafka single|cluster (Apache Kafka instead of tansu: one node,
#            or three brokers over SASL_SSL with SCRAM and ACLs, RF 3,
#            min.insync.replicas 2; tests/kafka/kafka.sh)
#
# The load (tests/bench/soak.rs): the five member types and a raw type, 5 %
# repeated deliveries, spread evenly over the replicas, at a fixed rate with
# latency counted from each request's scheduled time. Every interval it
# records each replica's RSS, open descriptors, threads and remembered
# event_ids (feishu_bridge_dedup_entries), the broker's RSS, and the
# window's p50/p99. At the end the topics are read back.
#
# Fails (exit 1) on: any answer but 200 or a transport error; any event
# answered 200 missing from the topics, or there twice; RSS, descriptors or
# threads of a replica at the end more than 10 % away from their value at
# the end of the warm-up; the p99 of a later block (of the warm-up's
# length) above twice the warm-up block's while the bridge's own
# enqueue -> ack p99 (the broker's answer, from its histogram) did not grow
# as much. The p99 target itself (within 2x) is printed met or NOT met
# either way: on tansu, whose cost per fetch grows with what it stores, the
# broker's answer slows down over a long run, and the report shows it.
#
# The dedup memory must hold every id a repeat may carry (the rate times
# about 30 s, --redeliver-after plus the pool's 15 s), or repeats are
# published again by design (docs/deduplication.md).
#
# Writes DIR/soak.jsonl (samples, windows, summary) and DIR/soak.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

MINUTES=60 RATE= INTERVAL=10 DEDUP_CAPACITY= WARMUP= OUTDIR=$ROOT/tests/bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --interval) INTERVAL=$2; shift ;;
    --dedup-capacity) DEDUP_CAPACITY=$2; shift ;;
    --warmup-minutes) WARMUP=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    --kafka) BENCH_KAFKA=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
WARMUP=${WARMUP:-$(python3 -c "print(min(10, $MINUTES / 3))")}

TANSU=${TANSU_BIN:-/opt/tansu-0.6.0/bin/tansu}
[ -n "${BENCH_KAFKA:-}" ] || [ -x "$TANSU" ] || { echo "tansu not found at $TANSU: run bash tests/run.sh first (it installs it)" >&2; exit 1; }
mkdir -p "$OUTDIR"
OUT=$OUTDIR/soak.jsonl
: > "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$WORK/kafka" ] && bash tests/kafka/kafka.sh down "$WORK/kafka"
  rm -rf "$WORK"
}
trap cleanup EXIT

source tests/bench/common.sh

RUN=soak-$RANDOM
# Under the prefix the cluster's ACLs grant the bridge (tests/kafka/kafka.sh).
TOPIC=feishu.soak.members.$RUN RAW=feishu.soak.raw.$RUN
create_topics "$TOPIC" "$TOPIC.dlq" "$RAW"

start_replica() { # topic raw-topic -> PID PORT ADMIN
  PORT=$(free_port) ADMIN=$(free_port)
  spawn_bridge "$BIN/feishu-kafka-bridge" "$WORK/bridge.log" "$PORT" "$ADMIN" "$1" \
    BRIDGE_RAW_EVENT_TYPES=im.message.receive_v1 BRIDGE_RAW_TOPIC="$2" BRIDGE_DEDUP_CAPACITY="${DEDUP_CAPACITY:-1000000}"
  PID=$BRIDGE_PID
  PIDS+=("$PID")
  wait_port "$PORT"
  wait_admin_ready "$ADMIN"
}

if [ -z "$RATE" ]; then
  # The peak of one bridge on a topic of its own (c=64, 5 s), as run.sh measures it.
  create_topics "feishu.soak.peak.$RUN" "feishu.soak.peak.$RUN.dlq"
  start_replica feishu.soak.peak.$RUN feishu.soak.peak.$RUN
  peak=$("$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$PORT" --concurrency 64 --requests 400000 --seconds 5 \
    --encrypt-key "$KEY" --token "$TOKEN" --run-id "peak-$RUN" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["throughput_rps"]))')
  kill "$PID"; wait "$PID" 2>/dev/null || true
  RATE=$((peak / 2))
  echo "== peak ${peak} events/s: soak at half, ${RATE}/s"
fi

# Default: full by the middle of the warm-up, but never less than a minute
# of ids (a repeat goes back at most about 30 s).
DEDUP_CAPACITY=${DEDUP_CAPACITY:-$(python3 -c "print(int(min(1_000_000, max($RATE * 60, $RATE * $WARMUP * 60 / 2))))")}
start_replica "$TOPIC" "$RAW"; A_PID=$PID A_PORT=$PORT A_ADMIN=$ADMIN
start_replica "$TOPIC" "$RAW"; B_PID=$PID B_PORT=$PORT B_ADMIN=$ADMIN
echo "== soak: ${MINUTES} min at ${RATE}/s over two replicas (samples every ${INTERVAL} s, warm-up ${WARMUP} min, dedup capacity ${DEDUP_CAPACITY})"

SECS=$(python3 -c "print(int($MINUTES * 60))")
BLOCK=$(python3 -c "print($WARMUP * 60)")
"$BIN/feishu-bench-soak" --addrs "127.0.0.1:$A_PORT,127.0.0.1:$B_PORT" --rate "$RATE" --seconds "$SECS" \
  --interval "$INTERVAL" --block-secs "$BLOCK" --encrypt-key "$KEY" --token "$TOKEN" --run-id "$RUN" \
  --brokers "$READ_BROKERS" --topics "$TOPIC,$RAW,$TOPIC.dlq" >"$WORK/driver.jsonl" &
DRIVER=$!
PIDS+=("$DRIVER")

# CPU seconds (user + system) a process has used.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
broker_cpu_secs() { local p; for p in "${BROKER_PIDS[@]}"; do cpu_secs "$p"; echo; done | awk '{t += $1} END {printf "%.2f", t}'; }
sample() { # name pid admin-port
  local fds threads rss entries
  fds=$(ls "/proc/$2/fd" 2>/dev/null | wc -l)
  threads=$(awk '/^Threads/ {print $2}' "/proc/$2/status" 2>/dev/null)
  rss=$(rss_kib "$2" 2>/dev/null)
  metrics=$(curl -s "127.0.0.1:$3/metrics")
  entries=$(awk '/^feishu_bridge_dedup_entries / {print $2}' <<<"$metrics")
  # The bridge's own enqueue -> ack histogram (every destination summed), so
  # that the report can tell the broker's share of a latency change.
  acks=$(awk -F'le="' '/^feishu_bridge_publish_duration_seconds_bucket/ {
           split($2, a, "\""); v = $0; sub(/.* /, "", v); n[a[1]] += v }
         END { s = ""; for (le in n) s = s sprintf("%s\"%s\":%.0f", s == "" ? "" : ",", le, n[le]); print s }' <<<"$metrics")
  echo "\"$1\":{\"rss_kib\":${rss:-0},\"fds\":${fds:-0},\"threads\":${threads:-0},\"dedup_entries\":${entries:-0},\"cpu_s\":$(cpu_secs "$2"),\"ack_buckets\":{$acks}}"
}
T0=$(date +%s)
while kill -0 "$DRIVER" 2>/dev/null; do
  sleep "$INTERVAL"
  kill -0 "$DRIVER" 2>/dev/null || break
  # Only while the load runs: the read-back at the end is not the soak.
  grep -q '"summary"' "$WORK/driver.jsonl" 2>/dev/null && break
  now=$(($(date +%s) - T0))
  [ $((now + 2)) -lt "$SECS" ] || continue
  echo "{\"sample\":{\"t\":$now,$(sample a "$A_PID" "$A_ADMIN"),$(sample b "$B_PID" "$B_ADMIN"),\"broker_rss_kib\":$(broker_rss_kib),\"broker_cpu_s\":$(broker_cpu_secs)}}" >>"$OUT"
  [ $((now % 300)) -lt "$INTERVAL" ] && tail -n 1 "$WORK/driver.jsonl" | sed 's/^/  /'
done
wait "$DRIVER"
cat "$WORK/driver.jsonl" >>"$OUT"

VENV=${BENCH_VENV:-/tmp/feishu-bench-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r tests/bench/requirements.txt
"$VENV/bin/python" tests/bench/soak_report.py "$OUT" "$OUTDIR/soak.png" "$WARMUP"
