"""ART of a restore test that boots what it restores, against one that only checks the bytes.

    python bench/boot_art.py [--repeat 5] [--json bench/boot-art-results.json]

Needs root, a libvirtd with QEMU (``eval "$(bash scripts/services.sh start)"``, or
``SAFEHOLD_TEST_LIBVIRT_URI``; default qemu:///system) and the venv of scripts/bootstrap.sh. Builds
the test guest of tests/support/guest.py (Debian's cloud kernel, a busybox initramfs, a 16 MiB
ext4 disk carrying a line), defines it as a shut-off libvirt domain, backs it up once, then runs
``--repeat`` restore tests of each kind through ``safehold.engine.restore_test.run_restore_test``,
alternating: ``checksum`` (restore the disk image into the sandbox, hash it: the bare restore) and
``boot`` (restore, boot the image in a sandbox domain until the console shows the guest's marker
and its disk's line, remove the sandbox). Reports the median and range of the ART of each, and
for boot the part from the sandbox's start to the sign of life. Everything made is removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

import guest  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import libvirt
    import yaml

    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.engine.restore_test import run_restore_test

    uri = os.environ.get("SAFEHOLD_TEST_LIBVIRT_URI", "qemu:///system")
    scratch = Path(tempfile.mkdtemp(prefix="safehold-bench-boot-"))
    connection = libvirt.open(uri)
    name = f"safehold-test-bench-{uuid.uuid4().hex[:8]}"
    line = f"bench disk {uuid.uuid4().hex}"
    made = guest.make_guest(scratch / "guest", name, line)
    domain = connection.defineXML(made.domain_xml(name))
    raw = scratch / "expected.raw"
    import subprocess

    subprocess.run(["qemu-img", "convert", "-O", "raw", str(made.disk), str(raw)], check=True)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    os.environ["SAFEHOLD_BENCH_PASSWORD"] = "boot bench password"
    config = scratch / "targets.yml"
    checks = {
        "checksum": {"type": "checksum", "path": "vda", "sha256": digest},
        "boot": {"type": "boot", "console": [f"^{guest.MARKER}$", f"^{re.escape(guest.DISK_LINE_PREFIX + line)}$"],
                 "timeout": "5m"},
    }

    def context_for(kind: str) -> Context:
        config.write_text(yaml.safe_dump({
            "repository": {"url": str(scratch / "repo"), "password_env": "SAFEHOLD_BENCH_PASSWORD"},
            "state_dir": str(scratch / "state"),
            "targets": [{"name": "vm", "tier": 1, "source": {"type": "libvirt", "domain": name, "uri": uri},
                         "restore_test": {"every": "1d", "health_check": checks[kind]}}]}))
        return Context.load(config)

    results: dict[str, list[dict]] = {"checksum": [], "boot": []}
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        context = context_for("checksum")
        init_repository(context)
        backup_target(context, "vm")
        context.close()
        for _ in range(args.repeat):
            for kind in ("checksum", "boot"):
                context = context_for(kind)
                try:
                    result = run_restore_test(context, "vm")
                    details = context.catalog.get_job(result.job_id).details or {}
                finally:
                    context.close()
                row = {"art_seconds": round(result.art_seconds, 3)}
                if kind == "boot":
                    row["boot_seconds"] = details["boot"]["boot_seconds"]
                    row["accelerator"] = details["boot"]["accelerator"]
                results[kind].append(row)
                print(f"{kind}: {row}", file=sys.stderr, flush=True)
    finally:
        try:
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass
        connection.close()
        shutil.rmtree(scratch, ignore_errors=True)

    def summary(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"

    report = {
        "command": f"python bench/boot_art.py --repeat {args.repeat}",
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "seconds_in_all": round(time.monotonic() - started, 1),
        "disk": f"{guest.DISK_SIZE // (1024 * 1024)} MiB ext4 (qcow2), kernel {guest.boot_files().release}",
        "runs": results,
        "checksum_art": summary([row["art_seconds"] for row in results["checksum"]]),
        "boot_art": summary([row["art_seconds"] for row in results["boot"]]),
        "boot_to_sign_of_life": summary([row["boot_seconds"] for row in results["boot"]]),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
