#!/usr/bin/env bash
# vcsim, the vSphere simulator, built offline from Debian's govmomi source
# (golang-github-vmware-govmomi-dev ships the simulator package but no main).
# The VMware tests start one vcsim per test themselves (tests/integration/vmware);
# this script only builds it, keeping Go's build cache outside the checkout.
set -euo pipefail
CACHE=${SAFEHOLD_VCSIM_CACHE:-/var/cache/safehold-test/vcsim}
BINARY="$CACHE/bin/vcsim"
SOURCE="$(cd "$(dirname "$0")/../.." && pwd)/tests/integration/vmware/vcsim/main.go"

install() {
    missing=()
    command -v go >/dev/null || missing+=(golang-go)
    [ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] || missing+=(golang-github-vmware-govmomi-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Rebuild only when main.go changed (a cold build takes ~20-45 s, a cached one a few).
    if [ -x "$BINARY" ] && cmp -s "$SOURCE" "$CACHE/gopath/src/safehold-vcsim/main.go"; then
        return
    fi
    mkdir -p "$CACHE/gopath/src/safehold-vcsim" "$CACHE/bin"
    cp "$SOURCE" "$CACHE/gopath/src/safehold-vcsim/main.go"
    # GOPATH mode, no module proxy: everything comes from /usr/share/gocode.
    (cd "$CACHE" && GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="$CACHE/gocache" \
        GOPATH="$CACHE/gopath:/usr/share/gocode" go build -o "$BINARY.tmp" safehold-vcsim)
    mv "$BINARY.tmp" "$BINARY"
}

start() {
    echo "export SAFEHOLD_TEST_VCSIM=$BINARY"
}

stop() {
    :  # nothing long-lived: each test stops the vcsim it started
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
