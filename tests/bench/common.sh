# Shared by the benchmark scripts (sourced, not run): helpers, the release
# build and a tansu broker on a free port. Expects ROOT, TANSU, WORK and the
# PIDS array (killed by the caller's exit trap); sets BIN, KPORT, BROKERS and TANSU_PID.

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
    FEISHU_ENCRYPT_KEY="$KEY" FEISHU_VERIFICATION_TOKEN="$TOKEN" BRIDGE_LOG=warn "${settings[@]}" \
    "$@" "$exe" >>"$log" 2>&1 &
  BRIDGE_PID=$!
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Waits until a bridge's /readyz (on its admin port) answers 200.
wait_admin_ready() { for _ in $(seq 1 6000); do [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$1/readyz")" = 200 ] && return 0; sleep 0.05; done; echo "not ready: admin port $1" >&2; return 1; }

echo "== building (release)"
cargo build --release --locked --features bench --bins 2>&1 | tail -n 1
# Wherever cargo puts it: CARGO_TARGET_DIR, a .cargo/config.toml, or target/.
target_dir() { cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'; }
BIN=$(target_dir)/release

echo "== starting tansu"
KPORT=$(free_port)
"$TANSU" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" >"$WORK/tansu.log" 2>&1 &
TANSU_PID=$!
PIDS+=("$TANSU_PID")
wait_port "$KPORT"
BROKERS=127.0.0.1:$KPORT
