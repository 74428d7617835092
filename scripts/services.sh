#!/usr/bin/env bash
# Start or stop the real services the tests use, on loopback only, under a
# scratch folder outside the checkout. `start` prints `export VAR=...` lines
# for the test run; `stop` stops what `start` started (by PID file).
#   PostgreSQL 15 (Debian): a throwaway cluster for the catalog-on-PostgreSQL tests.
set -euo pipefail
SCRATCH=${SAFEHOLD_TEST_SCRATCH:-/tmp/safehold-test-services}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() {
    mkdir -p "$SCRATCH"
    chmod 755 "$SCRATCH"
    local data="$SCRATCH/pg" port
    port=$(free_port)
    rm -rf "$data"; mkdir -p "$data"; chown postgres:postgres "$data"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -s \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data -c fsync=off" start
    echo "export SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
}

stop() {
    if [ -f "$SCRATCH/pg/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$SCRATCH/pg" -m fast -w -s stop || true
    fi
    rm -rf "$SCRATCH"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
