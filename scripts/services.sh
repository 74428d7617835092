#!/usr/bin/env bash
# Install, start or stop the real services the tests use, on loopback only,
# under a scratch folder outside the checkout. One script per service lives in
# scripts/services.d/; each takes the same three actions:
#   install  apt-get/pip what it needs when missing (idempotent)
#   start    start it and print `export VAR=...` lines for the test run
#   stop     stop what `start` started (by PID file) and remove its scratch data
# Scripts run in name order for install/start and in reverse order for stop.
set -euo pipefail
cd "$(dirname "$0")/.."
export SAFEHOLD_TEST_SCRATCH=${SAFEHOLD_TEST_SCRATCH:-/tmp/safehold-test-services}
scripts=(scripts/services.d/*.sh)

case "${1:-}" in
    install)
        for s in "${scripts[@]}"; do bash "$s" install; done ;;
    start)
        mkdir -p "$SAFEHOLD_TEST_SCRATCH"; chmod 755 "$SAFEHOLD_TEST_SCRATCH"
        for s in "${scripts[@]}"; do
            out=$(bash "$s" start) || { echo "error: $s start failed" >&2; exit 1; }
            echo "$out"; eval "$out"   # later services may use earlier ones' variables
        done ;;
    stop)
        for ((i=${#scripts[@]}-1; i>=0; i--)); do bash "${scripts[$i]}" stop || true; done
        rm -rf "$SAFEHOLD_TEST_SCRATCH" ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
