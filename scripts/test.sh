#!/usr/bin/env bash
# Installs everything the tests need (system packages, .venv with the test
# extras), starts the real services on loopback, runs the whole test suite and
# stops the services again. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: PostgreSQL for the catalog, e2fsprogs for
# example images, util-linux for tmpfs mounts (full-disk tests), restic and
# borg for the benchmark's smoke test.
missing=()
[ -n "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || missing+=(postgresql)
command -v mke2fs >/dev/null || missing+=(e2fsprogs)
command -v runuser >/dev/null || missing+=(util-linux)
command -v restic >/dev/null || missing+=(restic)        # bench smoke test: the peers
command -v borg >/dev/null || missing+=(borgbackup)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash scripts/bootstrap.sh test
export PATH="$PWD/.venv/bin:$PATH"

eval "$(bash scripts/services.sh start)"
trap 'bash scripts/services.sh stop' EXIT
.venv/bin/python -m pytest -q "$@"
