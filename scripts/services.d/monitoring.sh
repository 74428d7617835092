#!/usr/bin/env bash
# The monitoring stack's tools (Debian): prometheus + promtool, prometheus-alertmanager + amtool
# and docker-compose (1.29, validates monitoring/docker-compose.yml without a Docker engine).
# Nothing long-lived: the tests start Prometheus and Alertmanager themselves, per test, on
# loopback (tests/monitoring/stack_support.py), so `start` and `stop` have nothing to do.
set -euo pipefail

install() {
    missing=()
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

case "${1:-}" in
    install) install ;;
    start | stop) ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
