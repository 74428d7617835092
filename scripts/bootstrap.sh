#!/usr/bin/env bash
# Shared by quickstart.sh and test.sh: make sure Python can build a virtual
# environment (Debian ships venv separately), then create .venv and install
# safehold into it with the given extras, every dependency pinned by a lock
# file (requirements/). Safe to run again.
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

# The system interpreter by default, with its site-packages visible in the venv: the libvirt
# driver uses Debian's python3-libvirt and python3-libnbd (libnbd's bindings are not on PyPI), and
# those are built for /usr/bin/python3 only. Packages pip installs into .venv still take precedence.
if [ -z "${PYTHON:-}" ] && [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    PYTHON=/usr/bin/python3
fi
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    apt_install python3 python3-venv
    PYTHON=python3
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
fi

EXTRAS=${1:-}
# A .venv made before it saw the system site-packages (or by another interpreter) is made again.
if [ -x .venv/bin/python ] && ! grep -q '^include-system-site-packages = true' .venv/pyvenv.cfg 2>/dev/null; then
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv --system-site-packages .venv
fi
# Every package comes from a lock file with hashes (scripts/lock.sh makes them), so a new release
# upstream cannot change what the quickstart or the tests run: requirements/test.lock for the test
# extras, requirements/base.lock otherwise. safehold itself is then installed editable without its
# dependencies and without build isolation (the build tools are pinned in the same lock).
case "$EXTRAS" in
    "") lock=requirements/base.lock ;;
    test) lock=requirements/test.lock ;;
    *) echo "error: no lock file for extras '$EXTRAS' (known: none, test); see scripts/lock.sh" >&2; exit 2 ;;
esac
log=$(mktemp)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$lock" >"$log" 2>&1 \
   || ! .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
        -e ".${EXTRAS:+[$EXTRAS]}" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "error: installing safehold into .venv from $lock failed (pip output above)" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
