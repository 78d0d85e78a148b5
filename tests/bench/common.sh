# Shared by the benchmark scripts (sourced, not run): helpers, the release
# build and a broker: tansu on a free port, or Apache Kafka (BENCH_KAFKA).
# Expects ROOT, TANSU, WORK and the PIDS array (killed by the caller's exit
# trap); sets BIN, BROKERS, READ_BROKERS, BROKER_PIDS, and KPORT and
# TANSU_PID with tansu.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
# The secrets every driver signs with (loadgen's and soak's defaults).
KEY=bench-encrypt-key TOKEN=bench-verification-token

# Topics of 3 partitions, as every benchmark uses.
create_topics() { for t in "$@"; do "$TANSU" topic create --broker "tcp://$BROKERS" --partitions 3 "$t" >/dev/null; done; }

# Starts a bridge binary in the background with what every benchmark gives
# it: listen and admin ports, the broker, the topic, the secrets above and
# warn-level logs; then the caller's VAR=value settings and, after `--`, a
# wrapper command (perf, valgrind) to run it under. Sets BRIDGE_PID.
spawn_bridge() { # exe log port admin topic [VAR=value...] [-- wrapper...]
  local exe=$1 log=$2 port=$3 admin=$4 topic=$5 settings=()
  shift 5
  while [ $# -gt 0 ] && [ "$1" != -- ]; do settings+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  env BRIDGE_LISTEN="127.0.0.1:$port" BRIDGE_ADMIN_LISTEN="127.0.0.1:$admin" KAFKA_BROKERS="$BROKERS" KAFKA_TOPIC="$topic" \
    FEISHU_ENCRYPT_KEY="$KEY" FEISHU_VERIFICATION_TOKEN="$TOKEN" BRIDGE_LOG=warn \
    ${BRIDGE_KAFKA_PROPERTIES:+KAFKA_PROPERTIES="$BRIDGE_KAFKA_PROPERTIES"} "${settings[@]}" \
    "$@" "$exe" >>"$log" 2>&1 &
  BRIDGE_PID=$!
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# RSS and CPU seconds of the broker's processes together.
broker_rss_kib() { local p t=0; for p in "${BROKER_PIDS[@]}"; do t=$((t + $(rss_kib "$p" 2>/dev/null || echo 0))); done; echo "$t"; }
# Waits until a bridge's /readyz (on its admin port) answers 200.
wait_admin_ready() { for _ in $(seq 1 6000); do [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$1/readyz")" = 200 ] && return 0; sleep 0.05; done; echo "not ready: admin port $1" >&2; return 1; }

echo "== building (release)"
cargo build --release --locked --features bench --bins 2>&1 | tail -n 1
# Wherever cargo puts it: CARGO_TARGET_DIR, a .cargo/config.toml, or target/.
target_dir() { cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'; }
BIN=$(target_dir)/release

# The broker: tansu by default; Apache Kafka with BENCH_KAFKA=single or
# cluster (tests/kafka/kafka.sh: one PLAINTEXT node, or three brokers over
# SASL_SSL with SCRAM and ACLs, the bridge as its user). The drivers read
# back through READ_BROKERS (Kafka's PLAINTEXT admin listener on the
# cluster); BROKER_PIDS are the broker's processes, for RSS and CPU.
if [ -n "${BENCH_KAFKA:-}" ]; then
  echo "== starting Apache Kafka ($BENCH_KAFKA)"
  # Benchmarks run the JIT in full (the tests' default stops at C1 for a
  # quick start) and give each node a fixed heap.
  export KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}
  export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}
  bash tests/kafka/kafka.sh up "$BENCH_KAFKA" "$WORK/kafka"
  kafka_env() { sed -n "s/^$1=//p" "$WORK/kafka/kafka.env"; }
  BROKERS=$(kafka_env KAFKA_BOOTSTRAP)
  READ_BROKERS=$(kafka_env KAFKA_ADMIN_BOOTSTRAP)
  mapfile -t BROKER_PIDS <"$WORK/kafka/pids"
  PIDS+=("${BROKER_PIDS[@]}")
  if [ "$BENCH_KAFKA" = cluster ]; then
    BRIDGE_KAFKA_PROPERTIES="security.protocol=SASL_SSL,sasl.mechanism=$(kafka_env KAFKA_SASL_MECHANISM),sasl.username=$(kafka_env KAFKA_BRIDGE_USER),sasl.password=$(kafka_env KAFKA_BRIDGE_PASSWORD),ssl.ca.location=$(kafka_env KAFKA_CA)"
  fi
  create_topics() {
    for t in "$@"; do
      bash tests/kafka/kafka.sh tool "$WORK/kafka" org.apache.kafka.tools.TopicCommand --create --topic "$t" --partitions 3 >/dev/null 2>&1
    done
  }
else
  echo "== starting tansu"
  KPORT=$(free_port)
  "$TANSU" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" >"$WORK/tansu.log" 2>&1 &
  TANSU_PID=$!
  PIDS+=("$TANSU_PID")
  wait_port "$KPORT"
  BROKERS=127.0.0.1:$KPORT
  READ_BROKERS=$BROKERS
  BROKER_PIDS=("$TANSU_PID")
fi
