"""What the drill machinery costs on top of a bare restore of the same snapshot, and the boot ART.

    python bench/drill_overhead.py [--size-mib 64] [--files 256] [--repeat 5] [--boot] [--boot-art]
                                   [--json FILE]

Files: makes ``--files`` files of ``--size-mib`` MiB in all (incompressible), backs them up once,
then (after one unmeasured round) alternates ``--repeat`` times a bare restore of that snapshot into an empty folder
(``engine.restore.restore_snapshot``: the repository lock, reading and verifying every chunk,
writing the tree, the restore job's catalog row) and a one-step drill of the same target with no
check (``engine.drill.run_drill``: the plan, which opens the repository and lists the target's
snapshots; the drill job; leftover scan; sandbox folder with its owner file; the same restore;
the sandbox's removal; the evidence report in three formats). The overhead is the drill's wall
time minus the bare restore's, as medians.

``--boot`` (needs root and libvirtd with QEMU, as bench/boot_art.py): the same for the bootable
test guest of tests/support/guest.py: a bare restore of its disk image against a one-step drill
with a ``boot`` check; the boot's own time (sandbox start to the console marker, from the step's
``boot.boot_seconds``) is reported beside it and subtracted for the machinery's share.
``--boot-art`` also runs bench/boot_art.py (its ``--repeat``) and includes its summary: the ART of
restore tests that only hash the restored disk against those that boot it.
Everything made is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
PASSWORD_ENV = "SAFEHOLD_BENCH_PASSWORD"


def median_range(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def write_config(scratch: Path, target: dict[str, Any], check: dict[str, Any] | None) -> Path:
    import yaml

    config = scratch / "targets.yml"
    step: dict[str, Any] = {"target": target["name"]}
    if check is not None:
        step["check"] = check
    config.write_text(yaml.safe_dump({
        "repository": {"url": str(scratch / "repo"), "password_env": PASSWORD_ENV},
        "state_dir": str(scratch / "state"),
        "targets": [target],
        "drills": [{"name": "bench", "scenario": "on_prem_host_failure",
                    "restore_to": {"type": "sandbox", "directory": str(scratch / "sandboxes")},
                    "steps": [step]}],
    }))
    return config


def compare(scratch: Path, target: dict[str, Any], check: dict[str, Any] | None, repeat: int,
            image: bool) -> dict[str, Any]:
    """Back up ``target`` once, then alternate bare restores and drills of that snapshot."""
    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.drill import run_drill
    from safehold.engine.maintenance import init_repository
    from safehold.engine.restore import restore_snapshot

    config = write_config(scratch, target, check)
    context = Context.load(config)
    try:
        init_repository(context)
        snapshot = backup_target(context, target["name"]).snapshot_id
    finally:
        context.close()
    # One unmeasured round first: the first restore of a process pays for imports and cold caches.
    for number in range(-1, 0):
        context = Context.load(config)
        try:
            restore_snapshot(context, snapshot, str(scratch / "warm-up"), target=target["name"],
                             images_into_directory=image)
            run_drill(context, "bench", report_dir=scratch / "report-warm-up")
        finally:
            context.close()
        shutil.rmtree(scratch / "warm-up", ignore_errors=True)
    bare: list[float] = []
    drill: list[float] = []
    arts: list[float] = []
    boots: list[float] = []
    for number in range(repeat):
        destination = scratch / f"bare-{number}"
        context = Context.load(config)
        try:
            start = time.monotonic()
            restore_snapshot(context, snapshot, str(destination), target=target["name"],
                             images_into_directory=image)
            bare.append(time.monotonic() - start)
        finally:
            context.close()
        shutil.rmtree(destination, ignore_errors=True)
        context = Context.load(config)
        try:
            start = time.monotonic()
            result = run_drill(context, "bench", report_dir=scratch / f"report-{number}")
            drill.append(time.monotonic() - start)
        finally:
            context.close()
        [step] = result.evidence["steps"]
        assert step["outcome"] == "passed" and result.evidence["left_behind"] == [], step
        arts.append(step["art_seconds"])
        if "boot" in step:
            boots.append(float(step["boot"]["boot_seconds"]))
        print(f"{target['name']} run {number + 1}: bare {bare[-1]:.3f}s, drill {drill[-1]:.3f}s, "
              f"ART {arts[-1]:.3f}s" + (f", boot {boots[-1]:.2f}s" if boots else ""), file=sys.stderr, flush=True)
    report: dict[str, Any] = {
        "bare_restore_seconds": median_range(bare),
        "drill_seconds": median_range(drill),
        "drill_step_art_seconds": median_range(arts),
        "overhead_seconds": round(statistics.median(drill) - statistics.median(bare), 3),
        "overhead_percent": round(100 * (statistics.median(drill) / statistics.median(bare) - 1), 1),
        "runs": [{"bare": round(b, 3), "drill": round(d, 3), "art": a} for b, d, a in zip(bare, drill, arts)],
    }
    if boots:
        report["boot_seconds"] = median_range(boots)
        report["machinery_seconds"] = round(statistics.median(drill) - statistics.median(bare)
                                            - statistics.median(boots), 3)
    return report


def files_case(scratch: Path, size_mib: int, files: int, repeat: int) -> dict[str, Any]:
    data = scratch / "data"
    data.mkdir()
    each = max(1, size_mib * 1024 * 1024 // files)
    for index in range(files):
        (data / f"file-{index:05d}.bin").write_bytes(os.urandom(each))
    target = {"name": "files", "tier": 2, "source": {"type": "files", "paths": [str(data)]}}
    report = compare(scratch, target, None, repeat, image=False)
    report["data"] = f"{files} files, {each * files / 2**20:.0f} MiB (random)"
    return report


def boot_case(scratch: Path, repeat: int) -> dict[str, Any]:
    import guest
    import libvirt

    uri = os.environ.get("SAFEHOLD_TEST_LIBVIRT_URI", "qemu:///system")
    connection = libvirt.open(uri)
    name = f"safehold-test-bench-{uuid.uuid4().hex[:8]}"
    line = f"bench disk {uuid.uuid4().hex}"
    made = guest.make_guest(scratch / "guest", name, line)
    domain = connection.defineXML(made.domain_xml(name))
    try:
        target = {"name": "vm", "tier": 1, "source": {"type": "libvirt", "domain": name, "uri": uri}}
        check = {"type": "boot", "timeout": "5m",
                 "console": [f"^{guest.MARKER}$", f"^{re.escape(guest.DISK_LINE_PREFIX + line)}$"]}
        report = compare(scratch, target, check, repeat, image=True)
        report["data"] = f"the test guest: {guest.DISK_SIZE // 2**20} MiB ext4 disk (qcow2), kernel " \
                         f"{guest.boot_files().release}"
        return report
    finally:
        try:
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass
        connection.close()


def boot_art(repeat: int, scratch: Path) -> dict[str, Any]:
    out = scratch / "boot-art.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "boot_art.py"), "--repeat", str(repeat), "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    return {key: result[key] for key in ("command", "checksum_art", "boot_art", "boot_to_sign_of_life")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--files", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--boot", action="store_true", help="also the boot drill of the test guest (libvirt)")
    parser.add_argument("--boot-art", action="store_true", help="also bench/boot_art.py's restore-test ARTs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault(PASSWORD_ENV, "drill overhead bench password")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    report: dict[str, Any] = {
        "command": "python bench/drill_overhead.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
    }
    scratch = Path(tempfile.mkdtemp(prefix="safehold-bench-drill-"))
    try:
        (scratch / "files").mkdir()
        report["files"] = files_case(scratch / "files", args.size_mib, args.files, args.repeat)
        if args.boot:
            (scratch / "boot").mkdir()
            report["boot"] = boot_case(scratch / "boot", args.repeat)
        if args.boot_art:
            report["boot_art"] = boot_art(args.repeat, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["load_average_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    report["seconds_in_all"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
