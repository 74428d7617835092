"""``drills:`` in targets.yml: what it accepts, and errors that name the file, the line and the bad value."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from safehold.config import Drill, load_config_text
from safehold.config.drills import topological_order
from safehold.config.models import BootCheck, CommandCheck
from safehold.errors import ConfigError, DrillNotFound

PATH = "/etc/safehold/targets.yml"
TARGETS = """\
repository: {url: /srv/repo}
targets:
  - {name: db, tier: 1, source: {type: libvirt, domain: db-01}}
  - {name: web, tier: 2, source: {type: files, paths: [/srv/www]}}
  - {name: docs, tier: 3, source: {type: files, paths: [/srv/docs]}}
drills:
"""


def load(drills: str):
    return load_config_text(TARGETS + textwrap.indent(textwrap.dedent(drills), "  "), PATH, environ={})


def problems(drills: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(drills)
    return caught.value.problems


def test_a_drill_with_dependencies_checks_and_defaults() -> None:
    config = load("""\
        - name: kvm-01-lost
          scenario: on_prem_host_failure
          restore_to: {directory: dr, uri: "qemu:///system"}
          steps:
            - {target: db, check: {type: boot, console: "login:"}}
            - {target: web, after: db, check: {type: command, run: "true"}, rto: 30m}
            - {target: docs}
        """)
    drill = config.drill("kvm-01-lost")
    assert isinstance(drill, Drill) and drill.scenario == "on_prem_host_failure"
    assert drill.restore_to.directory == "/etc/safehold/dr" and drill.restore_to.uri == "qemu:///system"
    assert isinstance(drill.step("db").check, BootCheck) and isinstance(drill.step("web").check, CommandCheck)
    assert drill.step("web").after == ["db"] and drill.step("web").rto == timedelta(minutes=30)
    assert drill.step("docs").check is None and drill.step("docs").rto is None and drill.before is None
    assert topological_order(drill) == [["db", "docs"], ["web"]]


def test_before_without_a_zone_is_utc() -> None:
    config = load("""\
        - {name: bad-day, scenario: data_corruption, before: "2026-12-01T06:00:00", steps: [{target: docs}]}
        """)
    assert config.drills[0].before == datetime(2026, 12, 1, 6, tzinfo=timezone.utc)


def test_an_unknown_drill_lists_the_known_ones() -> None:
    config = load("- {name: one, scenario: data_corruption, steps: [{target: docs}]}\n")
    with pytest.raises(DrillNotFound) as caught:
        config.drill("two")
    assert "two" in caught.value.message and "one" in caught.value.hint


def test_unknown_target_and_unknown_scenario_name_their_line() -> None:
    found = problems("""\
        - name: lost
          scenario: on_prem_host_failure
          steps:
            - {target: db}
            - {target: dbx}
        - name: flood
          scenario: flood
          steps: [{target: docs}]
        """)
    assert any(p.startswith(f"{PATH}:11:") and "unknown target 'dbx'" in p and "db, docs, web" in p for p in found), found
    assert any(p.startswith(f"{PATH}:13:") and "flood" in p and "on_prem_host_failure" in p for p in found), found


def test_a_cycle_in_after_is_refused_with_its_path() -> None:
    found = problems("""\
        - name: lost
          scenario: on_prem_host_failure
          steps:
            - {target: db, after: [web]}
            - {target: web, after: [docs]}
            - {target: docs, after: [db]}
        """)
    assert len(found) == 1, found
    assert found[0].startswith(f"{PATH}:10:") and "cycle: db -> web -> docs -> db" in found[0]


@pytest.mark.parametrize(("steps", "message"), [
    ("[{target: db, after: [db]}]", "cannot come after itself"),
    ("[{target: db}, {target: web, after: [docs]}]", "'docs' is not a step of this drill"),
    ("[{target: db}, {target: db}]", "appears twice"),
    ("[{target: web, check: {type: boot, console: up}}]", "'boot' boots the restored disks"),
    ("[]", "at least 1"),
])
def test_bad_steps(steps: str, message: str) -> None:
    found = problems(f"- {{name: lost, scenario: on_prem_host_failure, steps: {steps}}}\n")
    assert any(message in problem and problem.startswith(f"{PATH}:") for problem in found), found


def test_duplicate_drill_names() -> None:
    found = problems("""\
        - {name: same, scenario: data_corruption, steps: [{target: docs}]}
        - {name: same, scenario: data_corruption, steps: [{target: web}]}
        """)
    assert any(p.startswith(f"{PATH}:8:") and "duplicate drill name 'same'" in p for p in found), found


def test_a_drill_restores_from_a_configured_copy_only() -> None:
    drill = """\
        - name: region-lost
          scenario: aws_region_failure
          repository: %s
          steps: [{target: web}]
    """
    copies = "copies:\n  - {name: offsite, repository: {url: /srv/offsite}}\n"
    config = load_config_text(TARGETS + textwrap.indent(textwrap.dedent(drill % "offsite"), "  ") + copies, PATH,
                              environ={})
    assert config.drill("region-lost").repository == "offsite"
    with pytest.raises(ConfigError) as caught:
        load_config_text(TARGETS + textwrap.indent(textwrap.dedent(drill % "elsewhere"), "  ") + copies, PATH,
                         environ={})
    [problem] = caught.value.problems
    assert "repository 'elsewhere' is not a copy under 'copies:' (configured: offsite)" in problem
    assert "line 9" in problem or "drills[0].repository" in problem or "drills" in problem


def test_a_drill_into_an_aws_region_names_it_and_restores_only_ebs_targets() -> None:
    found = problems("""\
        - name: region-lost
          scenario: aws_region_failure
          restore_to: {type: aws}
          steps: [{target: web}]
        - name: region-lost-2
          scenario: aws_region_failure
          restore_to: {type: aws, region: us-west-2, instance: i-12}
          steps: [{target: docs, check: {type: instance}}]
        - name: sandboxed
          scenario: aws_region_failure
          restore_to: {region: us-west-2}
          steps: [{target: docs}]
        - name: site-lost
          scenario: on_prem_host_failure
          restore_to: {type: aws, region: us-west-2}
          steps: [{target: db}]
        """)
    text = "\n".join(found)
    assert f"{PATH}:9: drills[region-lost].restore_to" in text and "restore_to type aws needs 'region'" in text
    assert "'i-12' is not an EC2 instance id" in text
    assert "target 'web' has source 'files': restore it in a drill with a sandbox destination" in text
    assert "type 'instance' brings EBS snapshots up in EC2, so it needs an ebs target" in text
    assert "region is for restore_to type aws" in text
    assert "brings the VM of target 'db' up as an EC2 instance (restore --to-ec2); give this step check" in text


def test_boot_steps_of_vmware_and_hyperv_targets() -> None:
    """Their restored disks boot in the drill's local sandbox like a libvirt target's; other sources
    are refused with the bootable kinds named."""
    text = textwrap.dedent("""\
        repository: {url: /srv/repo}
        targets:
          - {name: esx-app, tier: 1, source: {type: vmware, server: vc.test, user: svc, vms: [app-01]}}
          - {name: hv-db, tier: 1, source: {type: hyperv, host: hv01.test, vm: db-01, username: svc}}
          - {name: web, tier: 2, source: {type: files, paths: [/srv/www]}}
        drills:
          - name: site-lost
            scenario: on_prem_host_failure
            steps:
              - {target: hv-db, check: {type: boot, console: "login:", kernel: /boot/vmlinuz}}
              - {target: esx-app, after: hv-db, check: {type: boot, console: "login:"}}
        """)
    drill = load_config_text(text, PATH, environ={}).drill("site-lost")
    assert isinstance(drill.step("hv-db").check, BootCheck) and isinstance(drill.step("esx-app").check, BootCheck)
    with pytest.raises(ConfigError) as caught:
        load_config_text(text + "      - {target: web, check: {type: boot, console: up}}\n", PATH, environ={})
    assert any("boots the restored disks of libvirt, image, vmware and hyperv targets; target 'web' has source "
               "'files'" in problem for problem in caught.value.problems), caught.value.problems
