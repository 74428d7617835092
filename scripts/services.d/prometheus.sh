#!/usr/bin/env bash
# Prometheus (Debian): the tests use its promtool to lint a scraped /metrics
# ('promtool check metrics'). Nothing long-lived: start and stop do nothing.
set -euo pipefail

install() {
    if ! command -v promtool >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >/dev/null
    fi
}

case "${1:-}" in
    install) install ;;
    start|stop) ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
