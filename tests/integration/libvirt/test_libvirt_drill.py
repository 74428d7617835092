"""An on-premise host-failure drill through the real ``safehold`` CLI: a libvirt guest (the bootable
test guest, tests/support/guest.py) standing for the database, booted in a sandbox on a second
storage folder ("kvm-02": the same libvirtd, another folder), then a files target standing for the
application, which waits for it (``after``); the evidence report is checked and nothing of the
sandboxes is left."""

from __future__ import annotations

import json
import time

import guest
import pytest
import yaml
from libvirt_support import write_config
from test_libvirt_boot import BootableDomain, cli, console_check, sandbox_domains

from safehold.platforms.libvirt.sandbox import SANDBOX_PREFIX


@pytest.fixture
def domain(connection, tmp_path):
    made = BootableDomain(connection, tmp_path / "guest")
    yield made
    made.remove()


def test_a_host_failure_drill_boots_the_database_first_and_proves_it_in_the_report(domain, libvirt_uri, tmp_path):
    folder = tmp_path / "ws"
    folder.mkdir()
    config = write_config(folder, domain.name, libvirt_uri)
    app_data = tmp_path / "app"
    app_data.mkdir()
    (app_data / "settings.ini").write_text("database = vm\n")
    data = yaml.safe_load(config.read_text())
    data["state_dir"] = str(folder / "state")
    data["targets"].append({"name": "app", "tier": 3, "source": {"type": "files", "paths": [str(app_data)]}})
    data["drills"] = [{
        "name": "kvm-01-lost", "scenario": "on_prem_host_failure",
        "restore_to": {"directory": str(tmp_path / "kvm-02"), "uri": libvirt_uri},
        "steps": [{"target": "app", "after": ["vm"],
                   "check": {"type": "command", "run": "grep -q 'database = vm' */settings.ini"}},
                  {"target": "vm", "check": console_check(domain.line)}],
    }]
    config.write_text(yaml.safe_dump(data))
    assert cli(config, "init").returncode == 0
    missing = cli(config, "drill", "plan", "kvm-01-lost", "--json")
    assert missing.returncode == 81, missing.stderr
    assert json.loads(missing.stdout)["problems"] == [
        "app: no snapshot: back it up ('safehold backup --target app')",
        "vm: no snapshot: back it up ('safehold backup --target vm')"]
    for target in ("vm", "app"):
        backup = cli(config, "backup", "-t", target)
        assert backup.returncode == 0, backup.stderr
    domain.rewrite_disk("written after the backup")  # only the restored disk carries the expected line

    planned = cli(config, "drill", "plan", "kvm-01-lost")
    assert planned.returncode == 0, planned.stderr
    assert "wave 1:\n  vm (libvirt, tier 2)" in planned.stdout and "wave 2:\n  app (files, tier 3) after vm" \
        in planned.stdout and "boots from the kernel of the domain XML saved in the snapshot" in planned.stdout

    started = time.monotonic()
    ran = cli(config, "drill", "run", "kvm-01-lost", "--report", str(tmp_path / "report"), "--json")
    elapsed = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report == {key: value for key, value in json.loads(ran.stdout).items() if key != "report_dir"}
    assert report["passed"] and report["scenario"] == "on_prem_host_failure" and report["waves"] == [["vm"], ["app"]]
    app, vm = report["steps"]
    assert vm["outcome"] == app["outcome"] == "passed" and vm["rto_met"] and app["rto_met"]
    assert vm["ended"] <= app["started"] and 0 < vm["art_seconds"] < app["art_seconds"] < elapsed
    assert [match["line"] for match in vm["boot"]["console_matches"]] == guest.expected_lines(domain.line)
    assert vm["boot"]["sandbox_domain"].startswith(f"{SANDBOX_PREFIX}vm-") and vm["boot"]["sandbox_uri"] == libvirt_uri
    assert vm["rpo_seconds"] > 0 and vm["rpo_met"] and app["rpo_met"]
    kinds = sorted(item["kind"] for item in report["created"])
    assert kinds == ["sandbox domain", "sandbox folder", "sandbox folder"]
    assert all(item["name"].startswith(str(tmp_path / "kvm-02")) for item in report["created"]
               if item["kind"] == "sandbox folder")
    def key(item: dict) -> tuple:
        return item["kind"], item["name"]

    assert sorted(report["created"], key=key) == sorted(report["removed"], key=key) and report["left_behind"] == []
    # Nothing is left: no sandbox domain, no sandbox folder on "kvm-02"; the production domain never ran.
    assert vm["boot"]["sandbox_domain"] not in sandbox_domains(libvirt_uri)
    assert list((tmp_path / "kvm-02").iterdir()) == []
    assert not domain.domain.isActive()
    shown = json.loads(cli(config, "jobs", "--id", str(report["job_id"]), "--json").stdout)["job"]
    assert shown["kind"] == "drill" and shown["status"] == "succeeded"
    page = (tmp_path / "report" / "report.html").read_text()
    assert "kvm-01-lost" in page and vm["boot"]["sandbox_domain"] in page

    # The region is lost instead (issue 15): the same VM disk comes back from the copy in the DR
    # region, with the source repository out of reach; no boot (the check reads the restored image).
    data = yaml.safe_load(config.read_text())
    data["copies"] = [{"name": "offsite", "repository": {"url": str(folder / "offsite"),
                                                         "password_env": "SAFEHOLD_TEST_LIBVIRT_PASSWORD"}}]
    data["drills"].append({"name": "region-lost", "scenario": "aws_region_failure", "repository": "offsite",
                           "restore_to": {"directory": str(tmp_path / "dr")},
                           "steps": [{"target": "vm", "check": {"type": "command",
                                                                "run": f"grep -qaF '{domain.line}' *"}}]})
    config.write_text(yaml.safe_dump(data))
    for args in (("init", "--for-copy", "offsite"), ("copy", "--to", "offsite")):
        assert cli(config, *args).returncode == 0, args
    (folder / "repo").rename(folder / "repo-lost")
    from_copy = cli(config, "drill", "run", "region-lost", "--json")
    assert from_copy.returncode == 0, from_copy.stderr
    evidence = json.loads(from_copy.stdout)
    [step] = evidence["steps"]
    assert evidence["passed"] and evidence["repository"] == "offsite" and step["outcome"] == "passed"
    assert step["snapshot_id"] != vm["snapshot_id"] and evidence["left_behind"] == []
    print(f"drill: vm ART {vm['art_seconds']:.2f}s (boot {vm['boot']['boot_seconds']:.2f}s), app ART "
          f"{app['art_seconds']:.2f}s, whole drill {report['duration_seconds']:.2f}s, CLI {elapsed:.2f}s")
