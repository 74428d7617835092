"""A libvirt connection and a domain's disks: what the libvirt source and restore both need."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from ...errors import DomainNotFound, HypervisorUnavailable


def import_libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise HypervisorUnavailable(uri="(any)", detail="the libvirt Python bindings are not installed "
                                    "(Debian: python3-libvirt; PyPI: libvirt-python)") from None
    return libvirt


def connect(uri: str) -> Any:
    libvirt = import_libvirt()
    libvirt.registerErrorHandler(lambda _context, _error: None, None)  # no stderr noise; we raise
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorUnavailable(uri=uri, detail=str(exc)) from None


def lookup_domain(connection: Any, name: str, uri: str) -> Any:
    libvirt = import_libvirt()
    try:
        return connection.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise DomainNotFound(domain=name, uri=uri) from None
        raise HypervisorUnavailable(uri=uri, detail=str(exc)) from None


@dataclass
class DomainDisk:
    target: str  # 'vda': the name libvirt, the backup job and the snapshot use
    path: str | None
    format: str  # qcow2, raw, ...


def domain_disks(domain_xml: str) -> list[DomainDisk]:
    """The domain's disks (device='disk' with a source), in XML order; CD-ROMs are left out."""
    disks = []
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        target, source, driver = disk.find("target"), disk.find("source"), disk.find("driver")
        if target is None or source is None:
            continue
        path = source.get("file") or source.get("dev")
        disks.append(DomainDisk(target.get("dev", ""), path, driver.get("type", "raw") if driver is not None else "raw"))
    return disks


def guest_agent_connected(domain_xml: str) -> bool:
    """True when the live XML shows the QEMU guest agent's channel with an agent on the other end."""
    for target in ET.fromstring(domain_xml).iterfind("./devices/channel/target"):
        if target.get("name") == "org.qemu.guest_agent.0":
            return target.get("state") == "connected"
    return False
