#!/usr/bin/env bash
# systemd-analyze, for `systemd-analyze verify` of deploy/systemd/ (tests/unit/deploy).
# Nothing is started: verify reads unit files and needs no running systemd.
set -euo pipefail

install() {
    if ! command -v systemd-analyze >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends systemd >/dev/null
    fi
}

case "${1:-}" in
    install) install ;;
    start|stop) ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
