"""Helpers for the libvirt integration tests: a tiny real domain (QEMU TCG, no OS) whose disk
the test writes through the QEMU monitor, and a safehold workspace that backs it up."""

from __future__ import annotations

import os
import subprocess
import textwrap
import uuid
from pathlib import Path

DISK_SIZE = 64 * 1024 * 1024
PASSWORD = "libvirt integration password"

DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{format}'/>
      <source file='{path}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class TestDomain:
    """A domain named safehold-test-* with one virtio disk (vda); the services script's stop
    removes any a crashed test leaves behind."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, connection, folder: Path, image_format: str = "qcow2", size: int = DISK_SIZE) -> None:
        self.connection = connection
        self.name = f"safehold-test-{uuid.uuid4().hex[:8]}"
        self.image = folder / f"{self.name}.{image_format}"
        subprocess.run(["qemu-img", "create", "-q", "-f", image_format, str(self.image), str(size)], check=True)
        self.domain = connection.defineXML(DOMAIN_XML.format(name=self.name, format=image_format, path=self.image))

    def start(self) -> None:
        self.domain.create()

    def stop(self) -> None:
        if self.domain.isActive():
            self.domain.destroy()

    def qemu_io(self, command: str) -> None:
        import libvirt_qemu

        line = f'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "{command}"'
        output = libvirt_qemu.qemuMonitorCommand(self.domain, line, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        assert "error" not in output.lower(), output

    def write(self, pattern: int, offset: int, length: int) -> None:
        """A guest write, injected through the QEMU monitor (there is no OS to write with)."""
        self.qemu_io(f"write -P {pattern:#x} {offset} {length}")

    def flush(self) -> None:
        """Make QEMU write its cached qcow2 metadata, so the image file reads as the guest sees it."""
        if self.domain.isActive():
            self.qemu_io("flush")

    def checkpoints(self) -> list[str]:
        return sorted(c.getName() for c in self.domain.listAllCheckpoints())

    def copy_image(self, destination: Path) -> Path:
        """The disk's current contents as a raw file (-U: the running QEMU holds the image lock)."""
        self.flush()
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(self.image), str(destination)], check=True)
        return destination

    def remove(self) -> None:
        import libvirt

        try:
            self.stop()
            self.domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass


def same_contents(first: Path, second: Path) -> subprocess.CompletedProcess:
    """``qemu-img compare`` (formats detected, -U for images a running QEMU holds): exit 0 when identical."""
    return subprocess.run(["qemu-img", "compare", "-U", str(first), str(second)], capture_output=True, text=True)


def write_config(folder: Path, domain: str, uri: str, **source) -> Path:
    options = "".join(f", {key}: {value}" for key, value in source.items())
    path = folder / "targets.yml"
    path.write_text(textwrap.dedent(f"""\
        repository: {{url: {folder / 'repo'}, password_env: SAFEHOLD_TEST_LIBVIRT_PASSWORD}}
        catalog: {{url: "sqlite:///{folder / 'state' / 'catalog.db'}"}}
        targets:
          - name: vm
            tier: 2
            source: {{type: libvirt, domain: {domain}, uri: "{uri}"{options}}}
        """))
    os.environ["SAFEHOLD_TEST_LIBVIRT_PASSWORD"] = PASSWORD
    return path
