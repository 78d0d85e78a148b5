#!/usr/bin/env bash
# Apache Kafka for the tests, the benchmarks and CI: the broker users run,
# started by the project itself on loopback, from jars that Maven fetches
# into a cache folder once per machine (tests/kafka/pom.xml pins them).
#
#   kafka.sh fetch                        the jars, into the cache (idempotent)
#   kafka.sh prepare single|cluster DIR   ports, TLS, SCRAM users, configs and
#                                         formatted storage in DIR; DIR/kafka.env
#   kafka.sh node DIR NAME                one node in the foreground (execs java;
#                                         its log is DIR/NAME/server.log)
#   kafka.sh acls DIR                     the cluster's ACLs, once its nodes are up
#   kafka.sh allow DIR USER OPS TOPIC     one more literal ACL (a denied topic's fix;
#                                         OPS like Write,Read,Describe)
#   kafka.sh up single|cluster DIR        prepare, every node in the background,
#                                         the ACLs; returns once clients can use it
#   kafka.sh down DIR                     stops every process `up` started
#   kafka.sh tool DIR CLASS ARGS...       a Kafka tool as the admin (e.g.
#                                         org.apache.kafka.tools.TopicCommand)
#
# single:  one combined broker and controller, PLAINTEXT, no authorization:
#          for suites that need a real broker and nothing more.
# cluster: one controller (a static quorum, `controller.quorum.voters`) and
#          three brokers; topics get replication factor 3 and
#          min.insync.replicas=2, unclean leader election is off. Clients
#          connect over SASL_SSL with SCRAM-SHA-512 (a CA and a leaf for
#          127.0.0.1 made here, as PEM files); StandardAuthorizer with ACLs:
#          the user `bridge` may write and read the topics named `feishu.*`,
#          the user `reader` may read them, nothing else is allowed. The
#          brokers replicate over a PLAINTEXT loopback listener whose
#          anonymous principal is a super user; the tests create topics
#          and ACLs through it (KAFKA_ADMIN_BOOTSTRAP), never the bridge.
#
# DIR/kafka.env holds what a client needs, as KEY=value lines: KAFKA_MODE,
# KAFKA_BOOTSTRAP (the clients' listener), KAFKA_ADMIN_BOOTSTRAP,
# KAFKA_CA, KAFKA_OTHER_CA (a CA that did not sign the brokers), the users'
# names and passwords, KAFKA_NODES and, per node, KAFKA_<NAME>_ID and
# KAFKA_<NAME>_PORT.
#
# Knobs: FKB_KAFKA_CACHE (the cache folder, default ~/.cache/feishu-kafka-bridge),
# KAFKA_HEAP_OPTS and KAFKA_JVM_OPTS (the JVM's; small heaps by default).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
cache=${FKB_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/feishu-kafka-bridge}
libs=$cache/kafka-$KAFKA_VERSION/libs

say() { echo "kafka.sh: $*" >&2; }
die() { say "$*"; exit 1; }

cmd_fetch() {
  local stamp=$libs/.pom.sha256 want
  want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Apache Kafka $KAFKA_VERSION (Debian: apt-get install maven)"
  command -v java >/dev/null || die "a Java runtime (17 or newer) is needed to run Apache Kafka (Debian: apt-get install openjdk-17-jre-headless)"
  say "fetching Apache Kafka $KAFKA_VERSION and its dependencies with Maven into $libs (once per machine)"
  rm -rf "$libs.tmp"
  mkdir -p "$libs.tmp"
  # Maven's own output only when it fails.
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >"$libs.log" 2>&1 \
    || { cat "$libs.log" >&2; die "Maven could not fetch Apache Kafka $KAFKA_VERSION (log above)"; }
  rm -rf "$libs"
  mv "$libs.tmp" "$libs"
  echo "$want" >"$stamp"
}

# N distinct free loopback ports (all held open until all are known).
free_ports() {
  python3 -c 'import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' "$1"
}

random_secret() { head -c 18 /dev/urandom | base64 | tr '+/' 'xy'; }

# A CA, a leaf for 127.0.0.1 signed by it (PEM, key in PKCS#8 as Kafka's
# PEM key store reads it), and a second CA that signed nothing.
make_tls() {
  local tls=$1
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.pem -days 7 -subj "/CN=feishu-kafka-bridge test CA" 2>/dev/null
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout other-ca.key -out other-ca.pem -days 7 -subj "/CN=some other CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout leaf.key -out leaf.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out leaf.pem -days 7 -extfile leaf.ext 2>/dev/null
    # Kafka's PEM key store: the private key, then the chain.
    cat leaf.key leaf.pem ca.pem >server.pem
  )
}

write_log4j() {
  cat >"$1/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
EOF
  cat >"$1/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
EOF
}

# Settings every node shares. Small internal topics and quick rebalances
# keep start-up fast; the rest is Kafka's defaults, as users run it, but for
# replica.lag.time.max.ms (30 s by default), so that a replica that stopped
# leaves the ISR within 10 s.
common_settings() {
  local rf=$1 min_isr=$2
  cat <<EOF
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
auto.create.topics.enable=false
offsets.topic.num.partitions=3
offsets.topic.replication.factor=$rf
transaction.state.log.num.partitions=3
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
replica.lag.time.max.ms=10000
log.flush.interval.messages=9223372036854775807
EOF
}

cmd_prepare() {
  local mode=$1 dir=$2
  case $mode in single|cluster) ;; *) die "mode must be single or cluster, not '$mode'" ;; esac
  cmd_fetch
  rm -rf "$dir"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  write_log4j "$dir"
  local cluster_id
  # Kafka's base64url id; one that starts with '-' would read as an
  # option to StorageTool (1 in 64), so a new one is drawn then.
  cluster_id=-
  while [ "${cluster_id:0:1}" = - ]; do
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  local env=$dir/kafka.env
  : >"$env"
  if [ "$mode" = single ]; then
    local port cport
    read -r port cport <<<"$(free_ports 2)"
    mkdir -p "$dir/k0"
    {
      echo "process.roles=broker,controller"
      echo "node.id=0"
      echo "controller.quorum.voters=0@127.0.0.1:$cport"
      echo "controller.listener.names=CONTROLLER"
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "inter.broker.listener.name=PLAINTEXT"
      echo "log.dirs=$dir/k0/data"
      common_settings 1 1
    } >"$dir/k0/server.properties"
    {
      echo "KAFKA_MODE=single"
      echo "KAFKA_BOOTSTRAP=127.0.0.1:$port"
      echo "KAFKA_ADMIN_BOOTSTRAP=127.0.0.1:$port"
      echo "KAFKA_NODES=k0"
      echo "KAFKA_K0_ID=0"
      echo "KAFKA_K0_PORT=$port"
    } >>"$env"
    storage_format "$dir/k0/server.properties" "$cluster_id"
    return 0
  fi

  make_tls "$dir/tls"
  local bridge_pw reader_pw admin_pw
  bridge_pw=$(random_secret); reader_pw=$(random_secret); admin_pw=$(random_secret)
  local cport bootstrap="" admin_bootstrap="" ports
  read -r -a ports <<<"$(free_ports 7)"
  cport=${ports[0]}
  local -A client internal
  for n in 1 2 3; do
    client[$n]=${ports[$n]}; internal[$n]=${ports[$((n + 3))]}
    bootstrap+="${bootstrap:+,}127.0.0.1:${client[$n]}"
    admin_bootstrap+="${admin_bootstrap:+,}127.0.0.1:${internal[$n]}"
  done
  local authz
  authz=$(printf '%s\n' \
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" \
    "super.users=User:ANONYMOUS;User:admin" \
    "allow.everyone.if.no.acl.found=false")
  mkdir -p "$dir/c0"
  {
    echo "process.roles=controller"
    echo "node.id=0"
    echo "controller.quorum.voters=0@127.0.0.1:$cport"
    echo "controller.listener.names=CONTROLLER"
    echo "listeners=CONTROLLER://127.0.0.1:$cport"
    echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT"
    echo "log.dirs=$dir/c0/data"
    echo "$authz"
    common_settings 3 2
  } >"$dir/c0/server.properties"
  for n in 1 2 3; do
    mkdir -p "$dir/b$n"
    {
      echo "process.roles=broker"
      echo "node.id=$n"
      echo "controller.quorum.voters=0@127.0.0.1:$cport"
      echo "controller.listener.names=CONTROLLER"
      echo "listeners=INTERNAL://127.0.0.1:${internal[$n]},CLIENT://127.0.0.1:${client[$n]}"
      echo "advertised.listeners=INTERNAL://127.0.0.1:${internal[$n]},CLIENT://127.0.0.1:${client[$n]}"
      echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:SASL_SSL"
      echo "inter.broker.listener.name=INTERNAL"
      echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
      echo "listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required ;"
      echo "ssl.keystore.type=PEM"
      echo "ssl.keystore.location=$dir/tls/server.pem"
      echo "log.dirs=$dir/b$n/data"
      echo "$authz"
      common_settings 3 2
    } >"$dir/b$n/server.properties"
  done
  # SCRAM users are written into the metadata log when it is formatted.
  local pids=()
  storage_format "$dir/c0/server.properties" "$cluster_id" \
    --add-scram "SCRAM-SHA-512=[name=bridge,password=$bridge_pw]" \
    --add-scram "SCRAM-SHA-512=[name=reader,password=$reader_pw]" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]" & pids+=($!)
  for n in 1 2 3; do storage_format "$dir/b$n/server.properties" "$cluster_id" & pids+=($!); done
  local pid
  for pid in "${pids[@]}"; do wait "$pid" || die "cannot format the nodes' storage"; done
  {
    echo "KAFKA_MODE=cluster"
    echo "KAFKA_BOOTSTRAP=$bootstrap"
    echo "KAFKA_ADMIN_BOOTSTRAP=$admin_bootstrap"
    echo "KAFKA_CA=$dir/tls/ca.pem"
    echo "KAFKA_OTHER_CA=$dir/tls/other-ca.pem"
    echo "KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
    echo "KAFKA_BRIDGE_USER=bridge"
    echo "KAFKA_BRIDGE_PASSWORD=$bridge_pw"
    echo "KAFKA_CONSUMER_USER=reader"
    echo "KAFKA_CONSUMER_PASSWORD=$reader_pw"
    echo "KAFKA_TOPIC_PREFIX=feishu."
    echo "KAFKA_NODES=c0 b1 b2 b3"
    echo "KAFKA_C0_ID=0"
    echo "KAFKA_C0_PORT=$cport"
    for n in 1 2 3; do
      echo "KAFKA_B${n}_ID=$n"
      echo "KAFKA_B${n}_PORT=${client[$n]}"
    done
  } >>"$env"
}

# The java command line, in the array JAVA (the class path is a wildcard
# that java expands itself); a tool's logs go to stderr, warnings only. C1
# alone by default: it halves the nodes' start-up on 2 cores; the benchmarks
# set KAFKA_JVM_OPTS without it.
java_cmd() {
  local dir=$1 log4j=${2:-log4j2.properties}
  # shellcheck disable=SC2206
  local heap=(${KAFKA_HEAP_OPTS:--Xms64m -Xmx384m})
  # shellcheck disable=SC2206
  local jvm=(${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData -Djava.awt.headless=true})
  JAVA=(java "${heap[@]}" "${jvm[@]}" "-Dlog4j2.configurationFile=$dir/$log4j" -cp "$libs/*")
}

storage_format() {
  local props=$1 id=$2
  shift 2
  local dir
  dir=$(dirname "$(dirname "$props")")
  java_cmd "$dir" tools-log4j2.properties
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$id" -c "$props" "$@" \
    >"$(dirname "$props")/format.log" 2>&1 \
    || { cat "$(dirname "$props")/format.log" >&2; die "cannot format $(dirname "$props")"; }
}

cmd_node() {
  local dir=$1 name=$2
  [ -f "$dir/$name/server.properties" ] || die "no node $name in $dir (run prepare first)"
  java_cmd "$dir"
  exec "${JAVA[@]}" kafka.Kafka "$dir/$name/server.properties" >>"$dir/$name/server.log" 2>&1
}

env_of() { sed -n "s/^$2=//p" "$1/kafka.env"; }

cmd_tool() {
  local dir=$1 class=$2
  shift 2
  java_cmd "$dir" tools-log4j2.properties
  "${JAVA[@]}" "$class" --bootstrap-server "$(env_of "$dir" KAFKA_ADMIN_BOOTSTRAP)" "$@"
}

# What the bridge and a reader need, as docs/operations.md's ACL table lists
# it. Four tool runs at once: each is a JVM start.
cmd_acls() {
  local dir=$1 prefix
  [ "$(env_of "$dir" KAFKA_MODE)" = cluster ] || return 0
  prefix=$(env_of "$dir" KAFKA_TOPIC_PREFIX)
  local acl=(org.apache.kafka.tools.AclCommand --add --resource-pattern-type prefixed)
  local pids=()
  cmd_tool "$dir" "${acl[@]}" --allow-principal User:bridge \
    --operation Write --operation Read --operation Describe --operation DescribeConfigs --topic "$prefix" >/dev/null & pids+=($!)
  cmd_tool "$dir" "${acl[@]}" --allow-principal User:bridge \
    --operation Describe --operation Read --group feishu-kafka-bridge. >/dev/null & pids+=($!)
  cmd_tool "$dir" "${acl[@]}" --allow-principal User:reader \
    --operation Read --operation Describe --topic "$prefix" >/dev/null & pids+=($!)
  cmd_tool "$dir" "${acl[@]}" --allow-principal User:reader \
    --operation Read --operation Describe --group reader >/dev/null & pids+=($!)
  local pid
  for pid in "${pids[@]}"; do wait "$pid" || die "cannot add the ACLs (see above)"; done
}

# OPS: one operation or several, comma-separated (Write,Read,Describe).
cmd_allow() {
  local dir=$1 user=$2 ops=$3 topic=$4 op
  local args=()
  for op in ${ops//,/ }; do args+=(--operation "$op"); done
  cmd_tool "$dir" org.apache.kafka.tools.AclCommand --add \
    --allow-principal "User:$user" "${args[@]}" --topic "$topic" >/dev/null
}

# True once every node has logged that it started (a broker does so once
# the controller has unfenced it).
cluster_answers() {
  local dir=$1 name
  for name in $(env_of "$dir" KAFKA_NODES); do
    grep -q "Kafka Server started" "$dir/$name/server.log" 2>/dev/null || return 1
  done
}

cmd_up() {
  local mode=$1 dir=$2
  cmd_prepare "$mode" "$dir"
  dir=$(cd "$dir" && pwd)
  : >"$dir/pids"
  local name
  for name in $(env_of "$dir" KAFKA_NODES); do
    setsid bash "$here/kafka.sh" node "$dir" "$name" </dev/null &
    echo "$!" >>"$dir/pids"
  done
  local give_up=$((SECONDS + 120))
  until cluster_answers "$dir"; do
    if [ $SECONDS -ge $give_up ]; then
      cmd_down "$dir"
      die "Kafka ($mode) did not come up within 120 s; logs: $dir/*/server.log"
    fi
    sleep 0.5
  done
  cmd_acls "$dir"
  say "Kafka $KAFKA_VERSION ($mode) is up: clients $(env_of "$dir" KAFKA_BOOTSTRAP); settings $dir/kafka.env; logs $dir/*/server.log; stop with: bash tests/kafka/kafka.sh down $dir"
}

cmd_down() {
  local dir=$1 pid
  [ -f "$dir/pids" ] || return 0
  while read -r pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done <"$dir/pids"
  local give_up=$((SECONDS + 30))
  while read -r pid; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $give_up ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done <"$dir/pids"
  rm -f "$dir/pids"
}

case ${1:-} in
  fetch) cmd_fetch; echo "$libs" ;;
  prepare) [ $# -eq 3 ] || die "usage: kafka.sh prepare single|cluster DIR"; cmd_prepare "$2" "$3" ;;
  node) [ $# -eq 3 ] || die "usage: kafka.sh node DIR NAME"; cmd_node "$2" "$3" ;;
  acls) [ $# -eq 2 ] || die "usage: kafka.sh acls DIR"; cmd_acls "$2" ;;
  allow) [ $# -eq 5 ] || die "usage: kafka.sh allow DIR USER OPERATION TOPIC"; cmd_allow "$2" "$3" "$4" "$5" ;;
  up) [ $# -eq 3 ] || die "usage: kafka.sh up single|cluster DIR"; cmd_up "$2" "$3" ;;
  down) [ $# -eq 2 ] || die "usage: kafka.sh down DIR"; cmd_down "$2" ;;
  tool) [ $# -ge 3 ] || die "usage: kafka.sh tool DIR CLASS ARGS..."; d=$2; c=$3; shift 3; cmd_tool "$d" "$c" "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
