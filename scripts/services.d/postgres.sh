#!/usr/bin/env bash
# PostgreSQL 15 (Debian): a throwaway cluster for the catalog-on-PostgreSQL tests.
set -euo pipefail
SCRATCH=${SAFEHOLD_TEST_SCRATCH:-/tmp/safehold-test-services}
DATA="$SCRATCH/pg"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

install() {
    missing=()
    [ -n "$(pg_bin)" ] || missing+=(postgresql)
    command -v runuser >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

start() {
    local bin port
    bin=$(pg_bin)
    # Already running (a second `services.sh start` while tests run): reuse it. Wiping its data
    # under a live postmaster would break every test connected to it.
    if [ -f "$DATA/port" ] && runuser -u postgres -- "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        echo "export SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$(cat "$DATA/port")/postgres"
        return
    fi
    stop  # a postmaster whose port file is gone, or stale files of a crashed one
    port=$(free_port)
    mkdir -p "$DATA"; chown postgres:postgres "$DATA"
    runuser -u postgres -- "$bin/initdb" -D "$DATA" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -s \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$DATA -c fsync=off" start
    echo "$port" >"$DATA/port"
    echo "export SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
}

stop() {
    if [ -f "$DATA/postmaster.pid" ]; then
        runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$DATA" -m fast -w -s stop || true
    fi
    rm -rf "$DATA"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
