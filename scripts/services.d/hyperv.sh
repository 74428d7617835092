#!/usr/bin/env bash
# Hyper-V: no service can run here (no Hyper-V host, no PowerShell on Debian). The tests use a
# fake host whose disks are real VHDX files, so they need qemu-img and qemu-io (qemu-utils).
# Nothing to start or stop.
set -euo pipefail

install() {
    if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends qemu-utils >/dev/null
    fi
}

case "${1:-}" in
    install) install ;;
    start|stop) ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
