#!/usr/bin/env bash
# OpenSSH (Debian's openssh-server): a separate sshd on a loopback port for the SSH source and
# destination tests, with its own host keys, config and authorized key under the scratch folder.
# It is not the machine's sshd (none need be running): it listens on 127.0.0.1 only, on a free
# port, and accepts only the test key. `start` is idempotent: a running one is reused.
set -euo pipefail
SCRATCH=${SAFEHOLD_TEST_SCRATCH:-/tmp/safehold-test-services}
DIR="$SCRATCH/sshd"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

install() {
    missing=()
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        # policy-rc.d (exit 101): the package must not start the machine's own sshd on port 22.
        local policy=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"
        fi
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
        [ -z "$policy" ] || rm -f "$policy"
    fi
}

print_env() {
    echo "export SAFEHOLD_TEST_SSH_HOST=127.0.0.1"
    echo "export SAFEHOLD_TEST_SSH_PORT=$(cat "$DIR/port")"
    echo "export SAFEHOLD_TEST_SSH_USER=$(id -un)"
    echo "export SAFEHOLD_TEST_SSH_UNPRIVILEGED_USER=nobody"
    echo "export SAFEHOLD_TEST_SSH_KEY=$DIR/client_key"
    echo "export SAFEHOLD_TEST_SSH_KNOWN_HOSTS=$DIR/known_hosts"
    echo "export SAFEHOLD_TEST_SSH_SFTP_LOG=$DIR/sftp.log"
    echo "export SAFEHOLD_TEST_SSH_PID=$DIR/sshd.pid"
}

start() {
    if [ -f "$DIR/sshd.pid" ] && kill -0 "$(cat "$DIR/sshd.pid")" 2>/dev/null; then
        print_env; return
    fi
    local port
    port=$(free_port)
    rm -rf "$DIR"; mkdir -p "$DIR"; chmod 755 "$DIR"
    mkdir -p /run/sshd; chmod 755 /run/sshd
    ssh-keygen -q -t ed25519 -N '' -C safehold-test-host -f "$DIR/host_ed25519_key"
    ssh-keygen -q -t ed25519 -N '' -C safehold-test-client -f "$DIR/client_key"
    cp "$DIR/client_key.pub" "$DIR/authorized_keys"; chmod 644 "$DIR/authorized_keys"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$DIR/host_ed25519_key.pub")" > "$DIR/known_hosts"
    echo "$port" > "$DIR/port"
    cat > "$DIR/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $DIR/host_ed25519_key
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
# The authorized key lives under /tmp (sticky, world-writable): a test-only sshd.
StrictModes no
AllowUsers $(id -un) nobody
MaxSessions 50
MaxStartups 50:30:100
Subsystem sftp $DIR/sftp-server
# An unprivileged account (SFTP only: its shell is nologin) for files the backup cannot read.
Match User nobody
    ForceCommand internal-sftp
CONF
    # Debian's sftp-server logging every request to sftp.log (stderr would go to the client), so
    # tests count on the server's side which files a backup opened.
    printf '#!/bin/sh\nexec /usr/lib/openssh/sftp-server -e -l VERBOSE "$@" 2>>%s/sftp.log\n' "$DIR" > "$DIR/sftp-server"
    chmod 755 "$DIR/sftp-server"
    /usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
    for _ in $(seq 50); do [ -s "$DIR/sshd.pid" ] && break; sleep 0.1; done
    print_env
}

stop() {
    if [ -f "$DIR/sshd.pid" ]; then
        kill "$(cat "$DIR/sshd.pid")" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
