#!/usr/bin/env bash
# Benchmark of the dedup memory shared through Kafka (src/follower/), on the
# same tansu broker and load generator as tests/bench/run.sh:
#   1. peak throughput with the follower off and on (c=64 and c=256, medians);
#   2. the window in which another replica does not know an id yet: replica
#      B's `dedup_follower_delay_seconds` (record timestamp -> id known) while
#      replica A takes load, at idle (20 events/s) and at half of the peak,
#      next to A's enqueue -> ack latency;
#   3. a warm start of 1,000,000 records: time to ready and RSS afterwards.
#
#   bash tests/bench/follower.sh             # ~9 min
#   bash tests/bench/follower.sh --smoke     # seconds (no 1M warm start)
#   options: --runs N --seconds S --warm-records N
#
# Prints its figures and writes them to tests/bench/results/follower.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

RUNS=3 SECONDS_PER=4 WARM=1000000 CONC="64 256"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) RUNS=1 SECONDS_PER=1 WARM=0 CONC="64" ;;
    --runs) RUNS=$2; shift ;;
    --seconds) SECONDS_PER=$2; shift ;;
    --warm-records) WARM=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

TANSU=${TANSU_BIN:-/opt/tansu-0.6.0/bin/tansu}
[ -x "$TANSU" ] || { echo "tansu not found at $TANSU: run bash tests/run.sh first (it installs it)" >&2; exit 1; }
mkdir -p tests/bench/results
OUT=$ROOT/tests/bench/results/follower.jsonl
: > "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

source tests/bench/common.sh
# Each bridge's admin port (/readyz, /metrics), by its callback port.
declare -A ADMIN
wait_ready() { wait_admin_ready "${ADMIN[$1]}"; }
metrics() { curl -s "127.0.0.1:${ADMIN[$1]}/metrics"; }
# CPU seconds (user + system) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

start_bridge() { # port topic follow -> pid (ADMIN[port] set by the caller)
  spawn_bridge "$BIN/feishu-kafka-bridge" "$WORK/bridge-$1.log" "$1" "${ADMIN[$1]}" "$2" \
    MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0 BRIDGE_DEDUP_FOLLOW="$3"
  echo "$BRIDGE_PID"
}

load() { # port topic concurrency requests [rate] -> loadgen's JSON line
  local rate=()
  [ -n "${5:-}" ] && rate=(--rate "$5")
  "$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$1" --concurrency "$3" --requests "$4" --seconds "$SECONDS_PER" \
    --encrypt-key "$KEY" --token "$TOKEN" --run-id "f-$RANDOM-$RANDOM" --brokers "$BROKERS" --topic "$2" "${rate[@]}"
}

# -- 1. peak, follower off vs on ------------------------------------------
declare -A PEAK
# A fresh topic and bridge per point: tansu's cost per fetch grows with
# what the topic holds, which would charge the follower for the runs before.
for follow in false true; do
  for c in $CONC; do
    topic=bench.follower.$follow.$c
    create_topics "$topic" "$topic.dlq"
    port=$(free_port); ADMIN[$port]=$(free_port)
    pid=$(start_bridge "$port" "$topic" "$follow")
    PIDS+=("$pid")
    wait_port "$port"; wait_ready "$port"
    rps=()
    b0=$(cpu_secs "$pid") k0=$(cpu_secs "$TANSU_PID") n0=$(metrics "$port" | awk '/^feishu_bridge_requests_total\{ingress="webhook",outcome="published"\}/ {print $2}')
    for run in $(seq 1 "$RUNS"); do
      line=$(load "$port" "$topic" "$c" $((50000 * ${SECONDS_PER%.*})))
      python3 -c "import json,sys; v=json.loads(sys.argv[1])['verified']; sys.exit(0 if v['valid'] else 1)" "$line" \
        || { echo "bench: the bridge lost or duplicated records (follow=$follow)" >&2; exit 1; }
      # Only 200s count: a run that answered anything else is not a peak.
      read -r r bad <<<"$(python3 -c "import json,sys; x=json.loads(sys.argv[1]); print(x['throughput_rps'], sum(v for k,v in x['statuses'].items() if k!='200'))" "$line")"
      [ "$bad" = 0 ] || { echo "bench: $bad answers other than 200 (follow=$follow c=$c): $line" >&2; exit 1; }
      rps+=("$r")
    done
    med=$(python3 -c "import statistics,sys; print(round(statistics.median(map(float,sys.argv[1:]))))" "${rps[@]}")
    # CPU per published event, of the bridge and of the broker, over these runs.
    n1=$(metrics "$port" | awk '/^feishu_bridge_requests_total\{ingress="webhook",outcome="published"\}/ {print $2}')
    read -r bus kus <<<"$(python3 -c "n=$n1-$n0; print(round(($(cpu_secs "$pid")-$b0)/n*1e6,1), round(($(cpu_secs "$TANSU_PID")-$k0)/n*1e6,1))")"
    echo "  follower=$follow c=$c: median ${med} rps over ${RUNS} runs (${rps[*]}); CPU per event: bridge ${bus} µs, tansu ${kus} µs"
    echo "{\"peak\":{\"follow\":$follow,\"concurrency\":$c,\"runs\":[$(IFS=,; echo "${rps[*]}")],\"median_rps\":$med,\"cpu_us_per_event\":{\"bridge\":$bus,\"tansu\":$kus}}}" >>"$OUT"
    key="$follow-$c"; PEAK[$key]=$med
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
best() { local m=0; for c in $CONC; do [ "${PEAK[$1-$c]}" -gt "$m" ] && m=${PEAK[$1-$c]}; done; echo "$m"; }
off=$(best false) on=$(best true)
echo "== peak: follower off ${off} rps, on ${on} rps: cost $(python3 -c "print(f'{(1-$on/$off)*100:.1f}%')")"

# -- 2. the window between two replicas ------------------------------------
# Quantiles of a histogram's increase between two scrapes, interpolated
# within buckets as Prometheus' histogram_quantile does.
QUANT='
import re,sys
labels=sys.argv[4] if len(sys.argv)>4 else ""
def buckets(path, name):
    out={}
    for line in open(path):
        m=re.match(name+r"_bucket\{"+re.escape(labels)+r"le=\"([^\"]+)\"\} (\S+)", line)
        if m: out[float(m.group(1))]=float(m.group(2))
    return out
name=sys.argv[1]
before=buckets(sys.argv[2],name); after=buckets(sys.argv[3],name)
les=sorted(after); d=[after[l]-before.get(l,0) for l in les]; total=d[-1]
def q(p):
    if total<=0: return float("nan")
    rank=p*total; prev_le=0.0; prev=0.0
    for le,c in zip(les,d):
        if c>=rank:
            if le==float("inf"): return prev_le
            return prev_le+(le-prev_le)*(rank-prev)/max(c-prev,1e-9)
        prev_le,prev=le,c
    return les[-2]
print(f"{q(0.5)*1000:.1f} {q(0.99)*1000:.1f} {int(total)}")
'
topic=bench.window
create_topics "$topic" "$topic.dlq"
pa=$(free_port) pb=$(free_port); ADMIN[$pa]=$(free_port); ADMIN[$pb]=$(free_port)
pida=$(start_bridge "$pa" "$topic" true); PIDS+=("$pida")
pidb=$(start_bridge "$pb" "$topic" true); PIDS+=("$pidb")
wait_port "$pa"; wait_port "$pb"; wait_ready "$pa"; wait_ready "$pb"
half=$((on / 2))
for phase in "idle 1 20" "half-peak 256 $half"; do
  set -- $phase
  name=$1 c=$2 rate=$3
  metrics "$pb" >"$WORK/b0"; metrics "$pa" >"$WORK/a0"
  line=$(load "$pa" "$topic" "$c" $((rate * ${SECONDS_PER%.*})) "$rate")
  sleep 1
  metrics "$pb" >"$WORK/b1"; metrics "$pa" >"$WORK/a1"
  read -r d50 d99 dn <<<"$(python3 -c "$QUANT" feishu_bridge_dedup_follower_delay_seconds "$WORK/b0" "$WORK/b1")"
  read -r p50 p99 pn <<<"$(python3 -c "$QUANT" feishu_bridge_publish_duration_seconds "$WORK/a0" "$WORK/a1" 'destination="record",')"
  got=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['throughput_rps']))" "$line")
  echo "  $name (${got} rps into A): record timestamp -> id known on B p50 ${d50} ms p99 ${d99} ms (${dn} ids); A's enqueue -> ack p50 ${p50} ms p99 ${p99} ms"
  echo "{\"window\":{\"phase\":\"$name\",\"rps\":$got,\"delay_ms\":{\"p50\":$d50,\"p99\":$d99,\"count\":$dn},\"publish_ms\":{\"p50\":$p50,\"p99\":$p99}}}" >>"$OUT"
done
kill "$pida" "$pidb"; wait "$pida" "$pidb" 2>/dev/null || true

# -- 3. warm start of WARM records -----------------------------------------
if [ "$WARM" -gt 0 ]; then
  topic=bench.warm
  create_topics "$topic" "$topic.dlq"
  port=$(free_port); ADMIN[$port]=$(free_port)
  pid=$(start_bridge "$port" "$topic" false); PIDS+=("$pid")
  wait_port "$port"; wait_ready "$port"
  echo "== writing $WARM records through a bridge"
  "$BIN/feishu-bench-loadgen" --addr "127.0.0.1:$port" --concurrency 64 --requests "$WARM" --warmup 0 \
    --encrypt-key "$KEY" --token "$TOKEN" --run-id "warm-$RANDOM" >"$WORK/warm.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  port=$(free_port); ADMIN[$port]=$(free_port)
  started=$(date +%s.%N)
  pid=$(start_bridge "$port" "$topic" true); PIDS+=("$pid")
  wait_port "$port"; wait_ready "$port"
  ready=$(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')")
  sleep 1
  m=$(metrics "$port")
  took=$(awk '/^feishu_bridge_dedup_warm_start_duration_seconds/ {print $2}' <<<"$m")
  learned=$(awk '/^feishu_bridge_dedup_ids_learned_total\{source="warm_start"\}/ {print $2}' <<<"$m")
  entries=$(awk '/^feishu_bridge_dedup_entries/ {print $2}' <<<"$m")
  exceeded=$(awk '/^feishu_bridge_dedup_warm_start_budget_exceeded/ {print $2}' <<<"$m")
  rss=$(rss_kib "$pid")
  echo "  warm start of $WARM records: ready after ${ready} s from process start (warm start ${took} s), learned ${learned}, remembered ${entries}, budget exceeded ${exceeded}, RSS $((rss / 1024)) MiB"
  echo "{\"warm_start\":{\"records\":$WARM,\"ready_s\":$ready,\"warm_start_s\":$took,\"learned\":$learned,\"dedup_entries\":$entries,\"budget_exceeded\":$exceeded,\"rss_kib\":$rss}}" >>"$OUT"
fi
echo "bench: follower done (figures written to $OUT)"
