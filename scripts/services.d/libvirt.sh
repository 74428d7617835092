#!/usr/bin/env bash
# libvirtd + QEMU (TCG, no /dev/kvm needed) from Debian's packages, started
# without systemd, for the KVM/libvirt source driver's tests.
#   install  the packages, the libvirt-qemu user libvirtd insists on, and the
#            qemu.conf settings that let QEMU run as root without a security driver;
#            busybox-static and e2fsprogs build the bootable test guest
#            (tests/support/guest.py: Debian's cloud kernel, a busybox initramfs)
#   start    virtlogd + libvirtd (unless a libvirtd already runs: then reuse it)
#   stop     remove leftover test domains, stop what start started (by PID)
set -euo pipefail
SCRATCH=${SAFEHOLD_TEST_SCRATCH:-/tmp/safehold-test-services}
STATE="$SCRATCH/libvirt"
URI=qemu:///system
QEMU_CONF=/etc/libvirt/qemu.conf
PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
          libvirt-dev pkg-config python3-libvirt python3-libnbd libnbd-bin
          busybox-static e2fsprogs)

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # libvirtd refuses to start when the user its QEMU driver defaults to does not exist.
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -s /usr/sbin/nologin libvirt-qemu
    mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt
    # Debian ships qemu.conf in libvirt-daemon-system (which wants systemd); set only the keys we
    # need: QEMU runs as root (it opens images in our scratch folder), no SELinux/AppArmor driver,
    # no mount namespace and logs to files (no systemd-journald here).
    touch "$QEMU_CONF"
    set_key user '"root"'; set_key group '"root"'; set_key security_driver '"none"'
    set_key namespaces '[]'; set_key stdio_handler '"file"'
}

set_key() {
    if grep -q "^$1 *=" "$QEMU_CONF"; then
        sed -i "s|^$1 *=.*|$1 = $2|" "$QEMU_CONF"
    else
        echo "$1 = $2" >>"$QEMU_CONF"
    fi
}

start() {
    mkdir -p "$STATE/images"
    if alive /run/libvirtd.pid && virsh -c "$URI" version >/dev/null 2>&1; then
        echo reused >"$STATE/daemon"
    else
        rm -f /run/libvirtd.pid /run/virtlogd.pid
        alive /run/virtlogd.pid || virtlogd -d
        libvirtd -d
        echo started >"$STATE/daemon"
        for _ in $(seq 1 120); do
            virsh -c "$URI" version >/dev/null 2>&1 && break
            sleep 0.5
        done
        virsh -c "$URI" version >/dev/null 2>&1 || { echo "error: libvirtd did not answer on $URI" >&2; exit 1; }
    fi
    echo "export SAFEHOLD_TEST_LIBVIRT_URI=$URI"
    echo "export SAFEHOLD_TEST_LIBVIRT_IMAGES=$STATE/images"
}

stop() {
    if virsh -c "$URI" version >/dev/null 2>&1; then
        # Test domains are named safehold-test-*, restore tests' sandboxes safehold-sandbox-*:
        # remove any a failed test left behind.
        for d in $(virsh -c "$URI" list --all --name 2>/dev/null | grep -E '^safehold-(test|sandbox)-' || true); do
            virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
            virsh -c "$URI" undefine "$d" --checkpoints-metadata >/dev/null 2>&1 || true
        done
    fi
    if [ "$(cat "$STATE/daemon" 2>/dev/null)" = started ]; then
        for pidfile in /run/libvirtd.pid /run/virtlogd.pid; do
            if alive "$pidfile"; then
                pid=$(cat "$pidfile"); kill "$pid"
                for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
        done
    fi
    rm -rf "$STATE"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
