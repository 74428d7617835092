"""The guest-agent branch of the libvirt driver, which the integration tests cannot reach (their
domain has no OS, so no agent answers). ``AgentDomain`` is a fake of the four libvirt domain calls
involved; it follows libvirt's documented behaviour: ``fsFreeze`` raises ``libvirtError`` when
the agent does not answer, ``backupBegin`` fixes the point in time when it returns."""

from __future__ import annotations

import libvirt
import pytest

from safehold.platforms.libvirt.connection import domain_disks
from safehold.sources.libvirt import LibvirtSource

XML = """<domain><name>db</name><devices>
  <disk type='file' device='disk'><driver type='qcow2'/><source file='/i/db.qcow2'/><target dev='vda'/></disk>
  <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='{state}'/></channel>
</devices></domain>"""


class AgentDomain:
    def __init__(self, state: str = "connected", freeze_fails: bool = False, thaw_fails: bool = False) -> None:
        self.xml = XML.format(state=state)
        self.freeze_fails, self.thaw_fails = freeze_fails, thaw_fails
        self.calls: list[str] = []

    def XMLDesc(self, flags: int = 0) -> str:
        return self.xml

    def fsFreeze(self) -> int:
        self.calls.append("freeze")
        if self.freeze_fails:
            raise libvirt.libvirtError("Guest agent is not responding: QEMU guest agent is not connected")
        return 1

    def fsThaw(self) -> int:
        self.calls.append("thaw")
        if self.thaw_fails:
            raise libvirt.libvirtError("Guest agent is not responding")
        return 1

    def backupBegin(self, backup_xml: str, checkpoint_xml: str | None, flags: int = 0) -> int:
        self.calls.append("begin")
        return 0


def begin(domain: AgentDomain) -> tuple[str, list[str]]:
    disks = domain_disks(domain.xml)
    warnings: list[str] = []
    source = LibvirtSource("db")
    consistency = source._begin_consistent(libvirt, domain, disks, disks, {}, "safehold-1", "/s", "/s/nbd.sock",
                                           warnings)
    return consistency, warnings


def test_a_connected_agent_freezes_around_the_start_of_the_backup():
    domain = AgentDomain()
    assert begin(domain) == ("fs-freeze", [])
    assert domain.calls == ["freeze", "begin", "thaw"]


def test_an_agent_that_does_not_answer_leaves_a_crash_consistent_backup_and_says_so():
    domain = AgentDomain(freeze_fails=True)
    consistency, warnings = begin(domain)
    assert consistency == "crash-consistent" and domain.calls == ["freeze", "begin"]
    assert len(warnings) == 1 and "did not freeze" in warnings[0] and "only crash-consistent" in warnings[0]


@pytest.mark.parametrize("state", ["disconnected", "none"])
def test_without_a_connected_agent_nothing_is_frozen(state):
    domain = AgentDomain(state=state)
    consistency, warnings = begin(domain)
    assert consistency == "crash-consistent" and domain.calls == ["begin"]
    assert "no QEMU guest agent is connected" in warnings[0]


def test_a_failed_thaw_is_reported():
    domain = AgentDomain(thaw_fails=True)
    consistency, warnings = begin(domain)
    assert consistency == "fs-freeze" and domain.calls == ["freeze", "begin", "thaw"]
    assert "thawing the file systems" in warnings[0]


def test_the_guest_is_thawed_even_when_the_backup_cannot_start():
    domain = AgentDomain()

    def refuse(*args, **kwargs):
        domain.calls.append("begin")
        raise libvirt.libvirtError("Operation not supported: incremental backup")

    domain.backupBegin = refuse
    with pytest.raises(libvirt.libvirtError):
        begin(domain)
    assert domain.calls == ["freeze", "begin", "thaw"]
