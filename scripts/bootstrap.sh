#!/usr/bin/env bash
# Shared by quickstart.sh and test.sh: make sure Python can build a virtual
# environment (Debian ships venv separately), then create .venv and install
# safehold into it with the given extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing system packages ($*); run as root or install them with apt-get" >&2
        exit 1
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    apt_install python3 python3-venv
    PYTHON=python3
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
fi

EXTRAS=${1:-}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
log=$(mktemp)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}" >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: installing safehold into .venv failed (pip output above)" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
