"""deploy/systemd/ passes `systemd-analyze verify` (no running systemd needed; the `systemd`
package is installed by scripts/services.d/systemd.sh).

verify checks that each ExecStart binary exists, so the units are verified as an installer
would place them: /usr/local/bin/safehold replaced by this environment's safehold script.
Template units are verified through an instance (web-01), as systemd would load them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[3] / "deploy" / "systemd"
INSTALLED_PATH = "/usr/local/bin/safehold"


def safehold_script() -> str:
    script = Path(sys.executable).with_name("safehold")
    assert script.is_file(), f"no safehold script beside {sys.executable}; install the package (pip install -e .)"
    return str(script)


def installed_copy(folder: Path) -> list[Path]:
    units = []
    for unit in sorted(UNITS.iterdir()):
        text = unit.read_text().replace(INSTALLED_PATH, safehold_script())
        name = unit.name.replace("@.", "@web-01.")
        (folder / name).write_text(text)
        units.append(folder / name)
    return units


def verify(units: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/services.sh install (or apt-get install systemd)"
    return subprocess.run([analyze, "verify", "--man=no", *[f"./{unit.name}" for unit in units]], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_units_verify_cleanly(tmp_path: Path) -> None:
    units = installed_copy(tmp_path)
    assert {unit.name for unit in units} == {
        "safehold.service", "safehold-backup@web-01.service", "safehold-backup@web-01.timer",
        "safehold-maintenance.service", "safehold-maintenance.timer", "safehold-worker.service"}
    result = verify(units, tmp_path)
    # verify exits 0 on mere warnings (an unknown key is ignored), so any output is a failure too.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda text: text.replace("OnCalendar=hourly", "OnCalendar=every so often"),
         "Failed to parse calendar specification"),
        (lambda text: text + "ExecStart=/bin/true\n", "Unknown key 'ExecStart' in section [Install]"),
    ],
)
def test_verify_catches_broken_units(tmp_path: Path, change, complaint) -> None:
    units = installed_copy(tmp_path)
    timer = tmp_path / "safehold-backup@web-01.timer"
    timer.write_text(change(timer.read_text()))
    result = verify(units, tmp_path)
    assert complaint in result.stderr


def test_the_timer_drives_the_backup_of_its_instance() -> None:
    timer = (UNITS / "safehold-backup@.timer").read_text()
    service = (UNITS / "safehold-backup@.service").read_text()
    assert "Unit=safehold-backup@%i.service" in timer and "Persistent=true" in timer
    assert f"ExecStart={INSTALLED_PATH} backup --target %i" in service
    assert f"ExecStart={INSTALLED_PATH} serve" in (UNITS / "safehold.service").read_text()


def test_the_worker_unit_runs_a_worker_with_its_secrets_from_a_file() -> None:
    worker = (UNITS / "safehold-worker.service").read_text()
    assert f"ExecStart={INSTALLED_PATH} worker " in worker
    assert "EnvironmentFile=-/etc/safehold/worker.env" in worker
    assert "SAFEHOLD_QUEUE_DSN=" not in worker.split("[Service]")[1]  # the DSN (a secret) never in the unit
