"""The ``boot`` health check in targets.yml: what it accepts, and the errors that name the bad value."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from safehold.config import load_config_text
from safehold.config.models import BootCheck
from safehold.errors import ConfigError


def config_with(check: str, source: str = "{type: libvirt, domain: web-01}") -> str:
    return textwrap.dedent(f"""\
        repository: {{url: /srv/repo}}
        targets:
          - name: web
            tier: 1
            source: {source}
            restore_test: {{health_check: {check}}}
        """)


def problems(check: str, source: str = "{type: libvirt, domain: web-01}") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(config_with(check, source), "/etc/safehold/targets.yml", environ={})
    return caught.value.problems


def test_a_boot_check_with_defaults_and_with_its_own_kernel() -> None:
    config = load_config_text(config_with("{type: boot, console: 'login:'}"), "/etc/safehold/targets.yml",
                              environ={})
    check = config.targets[0].restore_test.health_check
    assert isinstance(check, BootCheck)
    assert check.console == ["login:"] and check.timeout == timedelta(minutes=5)
    assert (check.kernel, check.uri, check.memory_mib, check.vcpus) == (None, None, None, None)

    config = load_config_text(config_with(
        "{type: boot, console: [up, '^ready$'], timeout: 90s, kernel: boot/vmlinuz, initrd: /b/initrd.gz, "
        "cmdline: console=ttyS0, memory_mib: 256, uri: 'qemu:///system'}", "{type: image, path: /dev/vg0/db}"),
        "/etc/safehold/targets.yml", environ={})
    check = config.targets[0].restore_test.health_check
    assert check.console == ["up", "^ready$"] and check.timeout == timedelta(seconds=90)
    assert check.kernel == "/etc/safehold/boot/vmlinuz"  # relative to the file, like every path in it
    assert check.initrd == "/b/initrd.gz" and check.memory_mib == 256


@pytest.mark.parametrize("check, expected", [
    ("{type: boot, console: '('}",
     "console.0: '(' is not a valid regular expression: missing ), unterminated subpattern at position 0"),
    ("{type: boot, console: 'x*'}", "console.0: 'x*' matches an empty console, so it proves nothing"),
    ("{type: boot, console: []}", "console: list should have at least 1 item"),
    ("{type: boot}", "console: missing required key 'console'"),
    ("{type: boot, console: up, cmdline: quiet}", "cmdline without kernel: direct kernel boot needs 'kernel' too"),
    ("{type: boot, console: up, kernel: /k, initrd: ''}", "initrd is empty; name a file on this host"),
    ("{type: boot, console: up, uri: localhost}", "'localhost' is not a libvirt URI; expected e.g. qemu:///system"),
    ("{type: boot, console: up, memory_mib: 16}", "memory_mib: 16 is not valid; input should be greater than or equal to 64"),
    ("{type: boot, console: up, network: default}", "network"),
    ("{type: boot, console: up, disk_bus: usb}", "disk_bus: 'usb' is not valid"),
])
def test_a_bad_boot_check_is_named_with_its_line(check: str, expected: str) -> None:
    found = problems(check)
    assert len(found) == 1 and found[0].startswith("/etc/safehold/targets.yml:6: ") and expected in found[0], found


def test_only_libvirt_image_vmware_and_hyperv_targets_boot() -> None:
    found = problems("{type: boot, console: up}", "{type: files, paths: [/srv]}")
    assert found == ["/etc/safehold/targets.yml:6: targets[web].restore_test.health_check.type: health check type "
                     "'boot' boots the restored disks of libvirt, image, vmware and hyperv targets in a libvirt "
                     "sandbox on this host; this target's source is 'files': use a command, file_exists or "
                     "checksum check"]
    found = problems("{type: boot, console: up}", "{type: ebs, region: eu-west-1, volume_ids: [vol-0123456789abcdef0]}")
    assert len(found) == 1 and found[0].endswith(
        "this target's source is 'ebs': use an attach or instance check (the EBS snapshots brought up in EC2), "
        "or a command check"), found
    for source in ("{type: vmware, server: vc.test, user: svc, vms: [app-01]}",
                   "{type: hyperv, host: hv01.test, vm: app-01, username: svc}"):
        config = load_config_text(config_with("{type: boot, console: up, kernel: /boot/vmlinuz, disk_bus: sata}",
                                              source), "/etc/safehold/targets.yml", environ={})
        check = config.targets[0].restore_test.health_check
        assert isinstance(check, BootCheck) and check.disk_bus == "sata", source
