#!/usr/bin/env bash
# Benchmark: this service against what users would otherwise run, in one run
# on one machine, against the same real broker (tansu) with the same
# pre-generated, signed and encrypted payloads.
#
#   bash tests/bench/run.sh                 # full sweep, 3 runs each (~30 min)
#   bash tests/bench/run.sh --quick         # 1 run, 1 user, 0% duplicates
#   bash tests/bench/run.sh --smoke         # seconds: bridge + ceiling only (CI)
#   options: --runs N --seconds S --systems "bridge bare python node baseline" --concurrency "1 16 64 256"
#            --variant-concurrency "64 256" (concurrencies for 50 users and 20% duplicates)
#            --no-half --no-memory --no-report (leave BENCHMARKS.md as it is)
#            --out FILE (results file; default tests/bench/results/results.jsonl)
#            --half-rate R (the fixed-rate run at R requests/s instead of half the peak)
#            --kafka single|cluster (Apache Kafka instead of tansu, tests/kafka/kafka.sh:
#            one PLAINTEXT node, or three brokers over SASL_SSL with SCRAM and ACLs,
#            RF 3, min.insync.replicas 2; every system connects to it alike, as
#            the bridge's user on the cluster, and the drivers read back through
#            its PLAINTEXT admin listener; first the brokers are warmed up for
#            BENCH_WARM_UP_SECS, 180 s on the cluster and 30 s on one node)
#   `baseline` is the bridge built from another commit (BASELINE_BIN, the
#   binary; tests/bench/compare.sh builds it and runs both in one run).
#   The bridge inherits the environment, so a variant is one variable away:
#   KAFKA_PROPERTIES=linger.ms=0 bash tests/bench/run.sh --systems bridge --no-report --out /tmp/l0.jsonl
#
# The concurrency sweep runs with 1 user and no duplicates; the payload
# (50 users) and duplicate (20%) variants run at --variant-concurrency.
#
# Every measurement point (system, users, duplicates, concurrency; the
# half-peak and memory runs too) gets a fresh topic and a freshly started
# server: tansu's cost per request grows with what a topic already holds
# (its fetch lists every batch of a partition), so points measured on one
# topic that keeps growing were not comparable.
#
# Writes tests/bench/results/results.jsonl, then tests/bench/BENCHMARKS.md and
# tests/bench/throughput.png (tests/bench/report.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

HALF_RATE= OUT_ARG= RUNS=3 SECONDS_PER=4 SYSTEMS="bridge bare python node" CONC="1 16 64 256" VCONC="64 256" USERS="1 50" DUPS="0 0.2" MEMORY=1 HALF=1 REPORT=1
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) RUNS=1 SECONDS_PER=1 SYSTEMS="bridge bare" CONC="16" VCONC="16" USERS="1" DUPS="0.2" MEMORY=0 HALF=0 REPORT=0 ;;
    --quick) RUNS=1 USERS="1" DUPS="0" ;;
    --runs) RUNS=$2; shift ;;
    --seconds) SECONDS_PER=$2; shift ;;
    --systems) SYSTEMS=$2; shift ;;
    --concurrency) CONC=$2; shift ;;
    --variant-concurrency) VCONC=$2; shift ;;
    --no-memory) MEMORY=0 ;;
    --no-half) HALF=0 ;;
    --no-report) REPORT=0 ;;
    --out) OUT_ARG=$2; shift ;;
    --half-rate) HALF_RATE=$2; shift ;;
    --kafka) BENCH_KAFKA=$2; shift
      case "$BENCH_KAFKA" in single|cluster) ;; *) echo "run.sh: --kafka takes single or cluster" >&2; exit 2 ;; esac ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

TANSU=${TANSU_BIN:-/opt/tansu-0.6.0/bin/tansu}
[ -n "${BENCH_KAFKA:-}" ] || [ -x "$TANSU" ] || { echo "tansu not found at $TANSU: run bash tests/run.sh first (it installs it)" >&2; exit 1; }
RESULTS=$ROOT/tests/bench/results
mkdir -p "$RESULTS"
OUT=${OUT_ARG:-$RESULTS/results.jsonl}
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

# What the peers connect with: on the cluster, the bridge's user over
# SASL_SSL; on Apache Kafka the Node peer's producer is idempotent, as the
# bridge's is (tansu 0.6 refuses kafkajs's InitProducerId).
PEER_ENV=()
if [ -n "${BENCH_KAFKA:-}" ]; then
  PEER_ENV+=(NODE_IDEMPOTENT=1)
  if [ "$BENCH_KAFKA" = cluster ]; then
    PEER_ENV+=(KAFKA_SASL_MECHANISM="$(kafka_env KAFKA_SASL_MECHANISM)" KAFKA_SASL_USERNAME="$(kafka_env KAFKA_BRIDGE_USER)"
      KAFKA_SASL_PASSWORD="$(kafka_env KAFKA_BRIDGE_PASSWORD)" KAFKA_SSL_CA="$(kafka_env KAFKA_CA)")
  fi
fi
# The cluster's ACLs grant the bridge's user topics under this prefix.
TOPIC_PREFIX=bench
[ "${BENCH_KAFKA:-}" = cluster ] && TOPIC_PREFIX=$(kafka_env KAFKA_TOPIC_PREFIX)bench

# The bridge and its baseline: the same service, another build.
is_bridge() { [ "$1" = bridge ] || [ "$1" = baseline ]; }

start_system() { # name port topic -> pid of the server (the bridge's admin port: ADMIN_PORT)
  local name=$1 port=$2 topic=$3 exe
  case "$name" in
    bridge|baseline)
      exe=$BIN/feishu-kafka-bridge
      [ "$name" = bridge ] || exe=${BASELINE_BIN:?baseline needs BASELINE_BIN}
      # The allocator settings of deploy/Dockerfile (the baseline may predate
      # their being applied in code).
      spawn_bridge "$exe" "$WORK/$name.log" "$port" "$ADMIN_PORT" "$topic" MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0 \
        BRIDGE_DEDUP_CAPACITY="${DEDUP_CAPACITY:-1000000}"
      echo "$BRIDGE_PID"; return ;;
    bare)
      BRIDGE_LISTEN=127.0.0.1:$port "$BIN/feishu-bench-bare" >"$WORK/$name.log" 2>&1 & ;;
    python)
      env "${PEER_ENV[@]}" KAFKA_BROKERS=$BROKERS KAFKA_TOPIC=$topic FEISHU_ENCRYPT_KEY=$KEY FEISHU_VERIFICATION_TOKEN=$TOKEN \
        "$VENV/bin/gunicorn" -w "$(nproc)" -b "127.0.0.1:$port" --chdir tests/bench/peers --log-level warning \
        python_bridge:app >"$WORK/$name.log" 2>&1 & ;;
    node)
      env "${PEER_ENV[@]}" PORT=$port KAFKA_BROKERS=$BROKERS KAFKA_TOPIC=$topic FEISHU_ENCRYPT_KEY=$KEY FEISHU_VERIFICATION_TOKEN=$TOKEN \
        node tests/bench/peers/node_bridge.js >"$WORK/$name.log" 2>&1 & ;;
  esac
  echo $!
}

# Starts a system on a fresh topic and waits until it takes requests (the
# bridge: until /readyz says so). Sets PORT, PID and TOPIC.
POINT=0
fresh_system() { # name
  POINT=$((POINT + 1))
  TOPIC=$TOPIC_PREFIX.$1.$POINT
  if [ "$1" != bare ]; then
    create_topics "$TOPIC" "$TOPIC.dlq"
  fi
  PORT=$(free_port) ADMIN_PORT=$(free_port)
  PID=$(start_system "$1" "$PORT" "$TOPIC")
  PIDS+=("$PID")
  wait_port "$PORT"
  ! is_bridge "$1" || wait_admin_ready "$ADMIN_PORT"
  sleep 1
}
stop_system() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

# Payloads to prepare per run: a little above what each system can take in
# SECONDS_PER on this kind of machine (preparing is the slow part of a run).
requests_for() {
  local per_sec
  case "$1" in bare) per_sec=100000 ;; bridge|baseline) per_sec=50000 ;; node) per_sec=10000 ;; *) per_sec=2000 ;; esac
  python3 -c "print(max(1000, int($per_sec * $SECONDS_PER)))"
}

if [ -n "${BENCH_KAFKA:-}" ]; then
  # A JVM compiles its hot paths during the first minutes under load:
  # without this, the first system measured pays for the brokers' JIT.
  # Measured on the cluster after 20 s of warm-up: the broker's CPU per
  # request fell over the next five minutes from 18.5 to 2.9 ms at c=1
  # (the bridge's rounds, then the Node peer's), so that the systems
  # measured later met a faster cluster; the single node settles sooner.
  warm=${BENCH_WARM_UP_SECS:-$([ "$BENCH_KAFKA" = cluster ] && echo 180 || echo 30)}
  echo "== warming the brokers up ($warm s of load through the bridge at concurrency 64 and 1, not measured)"
  fresh_system bridge
  for c in 64 1; do
    "$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$PORT" --concurrency "$c" --requests $((c == 64 ? 150000 : 40000)) --seconds "$((warm / 2))" --warmup 0 \
      --encrypt-key "$KEY" --token "$TOKEN" --run-id "warm-$c-$RANDOM" >/dev/null
  done
  stop_system
fi

for sys in $SYSTEMS; do
  case "$sys" in
    python)
      VENV=${BENCH_VENV:-/tmp/feishu-bench-venv}
      [ -x "$VENV/bin/gunicorn" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r tests/bench/peers/requirements.txt; } ;;
    node)
      [ -d tests/bench/peers/node_modules ] || (cd tests/bench/peers && npm ci --no-audit --no-fund >/dev/null) ;;
  esac
  echo "== $sys"
  for users in $USERS; do for dup in $DUPS; do
  concs=$CONC
  [ "$users" = 1 ] && [ "$dup" = 0 ] || concs=$VCONC
  for c in $concs; do
    fresh_system "$sys"
    pid=$PID port=$PORT idle=$(rss_kib "$PID")
    verify=(--brokers "$READ_BROKERS" --topic "$TOPIC")
    [ "$sys" = bare ] && verify=()
    for run in $(seq 1 "$RUNS"); do
    rid="$sys-u$users-d$dup-c$c-r$run-$RANDOM"
    # CPU of the server (gunicorn's workers included), the broker and the
    # load generator while the measured requests run.
    tree=$(echo "$pid" $(pgrep -P "$pid") | tr ' ' ,)
    line=$("$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$port" --concurrency "$c" --requests "$(requests_for "$sys")" --seconds "$SECONDS_PER" \
      --users "$users" --dup-rate "$dup" --encrypt-key "$KEY" --token "$TOKEN" --run-id "$rid" "${verify[@]}" \
      --cpu "system=$tree" --cpu "broker=$(IFS=,; echo "${BROKER_PIDS[*]}")" --cpu loadgen=self &
      lp=$!; sleep "$(python3 -c "print($SECONDS_PER/2+0.5)")"; echo "RSS $(rss_kib "$pid")" >"$WORK/rss"; wait $lp)
    load_rss=$(awk '{print $2}' "$WORK/rss")
    echo "{\"system\":\"$sys\",\"run\":$run,\"idle_rss_kib\":$idle,\"load_rss_kib\":${load_rss:-0},\"result\":$line}" >>"$OUT"
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); v=r.get('verified',{}); cu=r.get('cpu_us_per_request',{}); print(f\"  users={r['users']} dup={r['dup_rate']} c={r['concurrency']:>3}: {r['throughput_rps']:9.0f} rps  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  CPU/request {cu.get('system','-')} µs (broker {cu.get('broker','-')}, loadgen {cu.get('loadgen','-')})  statuses {r['statuses']}  lost {v.get('lost','-')} dup-records {v.get('duplicated','-')}\")" "$line"
    if is_bridge "$sys"; then
      # A benchmark that loses or duplicates data is not a result.
      python3 -c "import json,sys; v=json.loads(sys.argv[1])['verified']; sys.exit(0 if v['valid'] and v['acked_events'] > 0 else 1)" "$line" \
        || { echo "bench: the $sys lost or duplicated records in $rid" >&2; exit 1; }
    fi
    done
    stop_system
  done; done; done
  if [ "$sys" = bridge ] && [ "$HALF" = 1 ]; then
    # Latency at half of the peak rate, sent at a fixed rate (open loop:
    # latency counts from each request's scheduled time).
    peak=$(python3 -c "
import json,statistics,sys
rs=[json.loads(l) for l in open(sys.argv[1])]
by={}
for r in rs:
    x=r.get('result')
    if r['system']=='bridge' and x and x['users']==1 and x['dup_rate']==0 and not x.get('rate'):
        by.setdefault(x['concurrency'],[]).append(x['throughput_rps'])
print(int(max(statistics.median(v) for v in by.values())) if by else 0)" "$OUT")
    half=${HALF_RATE:-$((peak / 2))}
    [ "$half" -gt 0 ] || { echo "bench: no 1-user, 0%-duplicate bridge runs to take the peak from" >&2; exit 1; }
    echo "== bridge at half of its peak (${peak} rps): ${half} rps"
    fresh_system bridge
    port=$PORT
    verify=(--brokers "$READ_BROKERS" --topic "$TOPIC")
    for run in $(seq 1 "$RUNS"); do
      rid="bridge-half-r$run-$RANDOM"
      line=$("$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$port" --concurrency 256 --rate "$half" \
        --requests "$((half * ${SECONDS_PER%.*}))" --encrypt-key "$KEY" --token "$TOKEN" --run-id "$rid" "${verify[@]}")
      echo "{\"system\":\"bridge\",\"run\":$run,\"half_peak\":true,\"peak_rps\":$peak,\"result\":$line}" >>"$OUT"
      python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"  rate {r['rate']:.0f}: {r['throughput_rps']:.0f} rps  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  p99.9 {r['p999_ms']:.2f} ms  lost {r['verified']['lost']} dup-records {r['verified']['duplicated']}\")" "$line"
    done
    stop_system
  fi
  if [ "$sys" = bridge ] && [ "$MEMORY" = 1 ]; then
    echo "== bridge memory with 1,000,000 remembered event_ids (fresh process)"
    fresh_system bridge
    pid=$PID port=$PORT
    idle=$(rss_kib "$pid")
    "$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$port" --concurrency 64 --requests 1000000 --warmup 0 \
      --encrypt-key "$KEY" --token "$TOKEN" --run-id "mem-$RANDOM" >"$WORK/mem.json"
    sleep 2
    full=$(rss_kib "$pid")
    entries=$(curl -s "127.0.0.1:$ADMIN_PORT/metrics" | awk '/^feishu_bridge_dedup_entries/ {print $2}')
    echo "{\"system\":\"bridge\",\"memory\":{\"idle_rss_kib\":$idle,\"rss_with_ids_kib\":$full,\"dedup_entries\":$entries}}" >>"$OUT"
    echo "  RSS idle ${idle} KiB, with ${entries} ids ${full} KiB"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done

python3 tests/bench/ratios.py "$OUT"

if [ "$REPORT" = 1 ]; then
  VENV=${BENCH_VENV:-/tmp/feishu-bench-venv}
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r tests/bench/requirements.txt
  "$VENV/bin/python" tests/bench/report.py "$OUT"
fi
echo "bench: done ($(grep -c '"result"' "$OUT") measurements in $OUT)"
