"""A guest that really boots, for restore tests and drills: Debian's cloud kernel, a busybox
initramfs, and an ext4 disk that carries the line the guest prints.

The guest boots by direct kernel boot (no bootloader): the initramfs loads the virtio modules,
mounts the guest's own disk (``/dev/vda``, ext4, read-only), and prints on the serial console

    SAFEHOLD-GUEST-UP
    safehold-guest-disk: <the first line of /safehold-guest.txt on the disk>

then stays up, idle, until it is destroyed (``safehold.after=poweroff`` on the kernel command line
makes it power off instead). The disk is what carries the second line, so a restore test that
boots a restored disk and sees that line proves the restored disk is what booted. Under QEMU's TCG
(no /dev/kvm acceleration on the test machines) the lines appear about 6 s after start.

The kernel and the initramfs are built once and cached outside the checkout, under
``$SAFEHOLD_TEST_GUEST_CACHE`` (default ``/var/cache/safehold-test/guest/<kernel release>-r<N>/``):
the kernel package is fetched with ``apt-get download`` (or taken from apt's archive cache when
offline) and unpacked with ``dpkg-deb``, nothing is installed on the host. ``busybox-static`` and
``e2fsprogs`` (``mkfs.ext4 -d``) come from Debian (``scripts/services.d/libvirt.sh install``).
Several processes may build at once: a lock file serialises them, and a build appears under its
final name only when complete.

Standard library only, so it runs under any Python (``python3 tests/support/guest.py build``
prints the cached files; ``... boot DIR`` boots a fresh guest with plain qemu-system-x86_64 and
prints its console, a smoke test without libvirt).
"""

from __future__ import annotations

import fcntl
import glob
import gzip
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Bump when the initramfs or its init changes, so that caches of an older recipe are not reused.
RECIPE = 2  # 2: virtio_net and an httpd serving the disk's line when the guest has a network card
CACHE = Path(os.environ.get("SAFEHOLD_TEST_GUEST_CACHE", "/var/cache/safehold-test/guest"))
KERNEL_PACKAGE = "linux-image-cloud-amd64"  # Debian's meta package; it depends on the current release
BUSYBOX = "/bin/busybox"  # busybox-static: no shared libraries needed in the initramfs

MARKER = "SAFEHOLD-GUEST-UP"
DISK_LINE_PREFIX = "safehold-guest-disk: "
DISK_FILE = "safehold-guest.txt"
CMDLINE = "console=ttyS0 quiet panic=-1"
DISK_SIZE = 16 * 1024 * 1024
MEMORY_MIB = 256

# In this order: each needs the ones before it (no modprobe or depmod in the initramfs).
MODULES = ("drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
           "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci.ko", "drivers/block/virtio_blk.ko",
           "net/core/failover.ko", "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko")

INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
exec >/dev/ttyS0 2>&1 </dev/null
for module in {' '.join(Path(m).stem for m in MODULES)}; do insmod /lib/modules/$module.ko; done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
if mount -t ext4 -o ro /dev/vda /mnt; then
    echo "{MARKER}"
    echo "{DISK_LINE_PREFIX}$(head -n 1 /mnt/{DISK_FILE})"
else
    echo "SAFEHOLD-GUEST-NO-DISK: cannot mount /dev/vda"
fi
case " $(cat /proc/cmdline) " in
    *" safehold.after=poweroff "*) sync; poweroff -f ;;
esac
# With a network card (a sandbox with tcp/http probes: QEMU user networking, guest 10.0.2.15),
# serve the disk's line over HTTP on port 80, so a probe proves the restored disk too.
if [ -d /sys/class/net/eth0 ]; then
    ip link set lo up; ip addr add 10.0.2.15/24 dev eth0; ip link set eth0 up
    mkdir -p /www; head -n 1 /mnt/{DISK_FILE} > /www/index.html
    httpd -p 80 -h /www && echo "SAFEHOLD-GUEST-HTTP: port 80"
fi
while true; do sleep 3600; done
"""


@dataclass(frozen=True)
class BootFiles:
    """The cached kernel and initramfs of the test guest."""

    kernel: Path
    initrd: Path
    release: str  # the kernel release, e.g. 6.1.0-57-cloud-amd64


@dataclass(frozen=True)
class Guest:
    """One guest: its disk and, beside it, the kernel and initramfs it boots with."""

    disk: Path
    disk_format: str
    kernel: Path
    initrd: Path
    cmdline: str
    line: str  # what the disk carries, printed after DISK_LINE_PREFIX

    def domain_xml(self, name: str, *, memory_mib: int = MEMORY_MIB, console: Path | None = None) -> str:
        """A libvirt domain booting this guest by direct kernel boot, no network, serial console
        to ``console`` (a file) or to a pty."""
        serial = (f"<serial type='file'><source path='{console}'/><target port='0'/></serial>"
                  if console else "<serial type='pty'><target port='0'/></serial>")
        return DOMAIN_XML.format(name=name, memory=memory_mib, kernel=self.kernel, initrd=self.initrd,
                                 cmdline=self.cmdline, format=self.disk_format, disk=self.disk, serial=serial)


DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{format}'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {serial}
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def expected_lines(line: str) -> list[str]:
    """The console lines a guest whose disk carries ``line`` prints once booted."""
    return [MARKER, DISK_LINE_PREFIX + line]


# --- the cached kernel and initramfs ---------------------------------------------------------------


def boot_files(cache: Path = CACHE) -> BootFiles:
    """The kernel and initramfs, built into ``cache`` the first time (a minute: the download and
    the unpacking), reused after."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find its result
        try:
            package = _kernel_package(cache)
        except RuntimeError:
            package = None  # offline: an older build will do
            if _newest_build(cache) is None:
                raise
        if package is None:
            built = _newest_build(cache)
            if built is None:
                raise RuntimeError(f"no kernel package: 'apt-cache depends {KERNEL_PACKAGE}' found none and "
                                   f"nothing is cached in {cache}; run 'apt-get update'")
            return built
        release = _release_of(package)
        folder = cache / f"{release}-r{RECIPE}"
        if not (folder / "vmlinuz").is_file() or not (folder / "initrd.gz").is_file():
            _build(cache, folder, package)
        return BootFiles(folder / "vmlinuz", folder / "initrd.gz", release)


def _kernel_package(cache: Path) -> Path | None:
    """The .deb of the kernel Debian's cloud meta package depends on: in the cache, fetched with
    'apt-get download', or from apt's own archive cache."""
    depends = subprocess.run(["apt-cache", "depends", KERNEL_PACKAGE], capture_output=True, text=True)
    names = re.findall(r"Depends: (linux-image-\S+-cloud-amd64)", depends.stdout)
    if not names:
        return None
    name = names[0]
    found = sorted(glob.glob(str(cache / f"{name}_*.deb"))) or sorted(
        glob.glob(f"/var/cache/apt/archives/{name}_*.deb"))
    if found:
        return Path(found[-1])
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        fetched = subprocess.run(["apt-get", "download", name], cwd=scratch, capture_output=True, text=True)
        debs = glob.glob(os.path.join(scratch, f"{name}_*.deb"))
        if fetched.returncode != 0 or not debs:
            raise RuntimeError(f"'apt-get download {name}' failed: {fetched.stderr.strip()}")
        target = cache / os.path.basename(debs[0])
        os.replace(debs[0], target)
    return target


def _release_of(package: Path) -> str:
    match = re.match(r"linux-image-(.+-cloud-amd64)_", package.name)
    if not match:
        raise RuntimeError(f"{package} is not named like a Debian kernel package")
    return match.group(1)


def _newest_build(cache: Path) -> BootFiles | None:
    builds = sorted(path for path in cache.glob(f"*-r{RECIPE}") if (path / "initrd.gz").is_file())
    if not builds:
        return None
    folder = builds[-1]
    return BootFiles(folder / "vmlinuz", folder / "initrd.gz", folder.name.rsplit("-r", 1)[0])


def _build(cache: Path, folder: Path, package: Path) -> None:
    release = _release_of(package)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        wanted = [f"./boot/vmlinuz-{release}"] + [f"./lib/modules/{release}/kernel/{module}" for module in MODULES]
        # Only the kernel and six modules out of the package's ~27 MB: dpkg-deb streams the data
        # tarball, tar keeps what it is asked for.
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(package)], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            members = {member.name: member for member in archive.getmembers()}
            missing = [name for name in wanted if name not in members]
            if missing:
                raise RuntimeError(f"{package.name} lacks {', '.join(missing)}")
            extracted = {name: archive.extractfile(members[name]).read() for name in wanted}  # type: ignore[union-attr]
        (scratch / "vmlinuz").write_bytes(extracted[wanted[0]])
        files = {"init": (INIT.encode(), 0o755), "bin/busybox": (Path(BUSYBOX).read_bytes(), 0o755)}
        for module in MODULES:
            files[f"lib/modules/{Path(module).name}"] = (extracted[f"./lib/modules/{release}/kernel/{module}"], 0o644)
        (scratch / "initrd.gz").write_bytes(gzip.compress(newc_archive(files), mtime=0))
        os.chmod(scratch, 0o755)  # QEMU may run as another user (libvirt-qemu) and must read it
        os.replace(scratch, folder)  # appears complete or not at all
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def newc_archive(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A cpio 'newc' archive (the initramfs format) of regular files, their folders, and the
    /dev/console node the kernel opens for init, written without root (no mknod) and
    reproducibly (times 0)."""
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [(".", 0o040755, b"", (0, 0)),
                                                               ("dev", 0o040755, b"", (0, 0)),
                                                               ("dev/console", 0o020600, b"", (5, 1))]
    folders = sorted({str(parent) for name in files for parent in Path(name).parents if str(parent) != "."})
    entries += [(folder, 0o040755, b"", (0, 0)) for folder in folders if folder != "dev"]
    entries += [(name, 0o100000 | mode, data, (0, 0)) for name, (data, mode) in sorted(files.items())]
    out = io.BytesIO()
    for inode, (name, mode, data, (major, minor)) in enumerate([*entries, ("TRAILER!!!", 0, b"", (0, 0))], 1):
        encoded = name.encode() + b"\0"
        fields = [inode, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(encoded), 0]
        out.write(b"070701" + b"".join(b"%08X" % field for field in fields) + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))
    return out.getvalue()


# --- one guest ------------------------------------------------------------------------------------


def make_disk(path: Path, line: str, *, image_format: str = "qcow2", size: int = DISK_SIZE) -> Path:
    """An ext4 disk (no partition table) at ``path`` whose /safehold-guest.txt holds ``line``;
    made without mounting anything (``mkfs.ext4 -d``)."""
    if "\n" in line:
        raise ValueError("the guest prints one line")
    with tempfile.TemporaryDirectory(prefix="safehold-guest-") as scratch:
        tree = Path(scratch) / "tree"
        tree.mkdir()
        (tree / DISK_FILE).write_text(line + "\n")
        raw = Path(scratch) / "disk.raw"
        with open(raw, "wb") as file:
            file.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "safehold-guest", "-d", str(tree), str(raw)],
                       check=True, capture_output=True)
        if image_format == "raw":
            shutil.move(raw, path)
        else:
            subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", image_format, str(raw), str(path)],
                           check=True)
    return path


def make_guest(folder: Path, name: str, line: str, *, image_format: str = "qcow2",
               cache: Path = CACHE) -> Guest:
    """A guest in ``folder``: the disk ``NAME.<format>`` carrying ``line``, and beside it
    ``NAME.vmlinuz`` and ``NAME.initrd.gz`` (hard links to the cache where possible)."""
    files = boot_files(cache)
    folder.mkdir(parents=True, exist_ok=True)
    kernel, initrd = folder / f"{name}.vmlinuz", folder / f"{name}.initrd.gz"
    for source, target in ((files.kernel, kernel), (files.initrd, initrd)):
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    disk = make_disk(folder / f"{name}.{image_format}", line, image_format=image_format)
    return Guest(disk, image_format, kernel, initrd, CMDLINE, line)


def boot_with_qemu(guest: Guest, timeout: float = 120.0) -> str:
    """Boot ``guest`` with plain QEMU (powering off after its lines); returns the console output."""
    command = ["qemu-system-x86_64", "-m", str(MEMORY_MIB), "-nographic", "-no-reboot", "-nodefaults",
               "-serial", "stdio", "-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
               "-drive", f"file={guest.disk},format={guest.disk_format},if=virtio",
               "-append", f"{guest.cmdline} safehold.after=poweroff"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        files = boot_files()
        print(f"kernel {files.kernel}\ninitrd {files.initrd}\nrelease {files.release}")
        return 0
    if argv[:1] == ["boot"] and len(argv) == 2:
        import time

        guest = make_guest(Path(argv[1]), "smoke", "hello from the smoke guest")
        started = time.monotonic()
        output = boot_with_qemu(guest)
        print(output)
        print(f"booted in {time.monotonic() - started:.1f}s; lines seen: "
              f"{all(line in output for line in expected_lines(guest.line))}")
        return 0
    print("usage: guest.py build | boot DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
