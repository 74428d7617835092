#!/usr/bin/env bash
# Installs everything the tests need (system packages, checked against
# requirements/debian.txt; .venv with the test extras, pinned with hashes by
# requirements/test.lock), starts the real services on loopback, runs the whole test suite and
# stops the services again. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use directly: e2fsprogs for example images,
# restic and borg for the benchmark's smoke test. Each service the tests start
# installs its own packages (scripts/services.d/*.sh install).
missing=()
command -v mke2fs >/dev/null || missing+=(e2fsprogs)
command -v restic >/dev/null || missing+=(restic)        # bench smoke test: the peers
command -v borg >/dev/null || missing+=(borgbackup)
command -v rsync >/dev/null || missing+=(rsync)          # the SSH benchmark's floor (bench/ssh.py)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash scripts/services.sh install
bash scripts/check_debian_versions.sh   # the upstream versions of requirements/debian.txt

bash scripts/bootstrap.sh test
export PATH="$PWD/.venv/bin:$PATH"

trap 'bash scripts/services.sh stop' EXIT
eval "$(bash scripts/services.sh start)"
# In parallel worker processes (pytest-xdist), grouped so that tests which watch a shared service
# never run beside each other (tests/conftest.py). SAFEHOLD_TEST_WORKERS=0 runs serially.
workers=${SAFEHOLD_TEST_WORKERS:-2}
parallel=()
[ "$workers" != 0 ] && parallel=(-n "$workers" --dist loadgroup)
.venv/bin/python -m pytest -q "${parallel[@]}" "$@"
