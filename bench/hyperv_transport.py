#!/usr/bin/env python3
"""Hyper-V backups against the fake host: direct, and through pypsrp over the loopback WinRM endpoint.

    python bench/hyperv_transport.py [--size-mib 256] [--writes 41]

Writes every byte of one disk, backs it up (full), makes ``--writes`` scattered 4 KiB guest
writes (41 is ~1 % of the disk's 64 KiB blocks at 256 MiB), backs up again (RCT incremental),
once with the fake host called directly and once through the real pypsrp client, PSRP and
HTTPS on loopback. No Hyper-V host is involved: the figures show safehold's side (bytes read,
round trips, the cost of PSRP's base64/CLIXML encoding with client and endpoint sharing this
machine's cores), not a real host's disk or network speed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hyperv"))

MiB = 1 << 20


def run(mode: str, size: int, writes: int) -> str:
    from fake_hyperv import FakeHyperVHost
    from winrm_server import WinRMServer

    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.platforms.hyperv.shell import PsrpShell
    from safehold.sources.hyperv import HyperVSource

    work = Path(tempfile.mkdtemp(prefix="safehold-hyperv-bench-"))
    try:
        host = FakeHyperVHost(work / "host")
        host.create_vm("vm1", [size])
        for offset in range(0, size, 16 * MiB):
            host.guest_write("vm1", 0, offset, min(16 * MiB, size - offset), (offset // MiB) % 250 + 1)
        server = WinRMServer(host, work)
        if mode == "winrm":
            HyperVSource.connect = lambda self: PsrpShell(
                "127.0.0.1", port=server.port, username="svc-backup", password="secret", ssl=True,
                verify_certificate=True, ca_bundle=str(server.certificate), auth="basic")
        else:
            HyperVSource.connect = lambda self: host
        os.environ.setdefault("SAFEHOLD_PASSWORD", "bench")
        (work / "targets.yml").write_text(
            f"repository: {{url: {work / 'repo'}}}\nstate_dir: {work / 'state'}\n"
            "tiers: {1: {rpo: 1h, rto: 1h}}\ntargets:\n"
            "  - {name: vm1, tier: 1, source: {type: hyperv, host: bench, vm: vm1}}\n")
        context = Context.load(work / "targets.yml")
        init_repository(context)
        started = time.monotonic()
        full = backup_target(context, "vm1")
        full_time = time.monotonic() - started
        calls = host.count("read-disk")
        rng = random.Random(1)
        for _ in range(writes):
            host.guest_write("vm1", 0, rng.randrange(0, size // 4096) * 4096, 4096, 0xEE)
        started = time.monotonic()
        incremental = backup_target(context, "vm1")
        incremental_time = time.monotonic() - started
        context.close()
        server.stop()
        return (f"| {mode} | {full_time:.2f} s | {full.summary['bytes_read'] / MiB:.1f} MiB | {calls} | "
                f"{incremental_time:.2f} s | {incremental.summary['bytes_read'] / MiB:.2f} MiB | "
                f"{host.count('read-disk') - calls} | {full_time / incremental_time:.1f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--writes", type=int, default=41)
    args = parser.parse_args()
    print("| path | full | read | round trips | incremental | read | round trips | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in ("direct", "winrm"):
        print(run(mode, args.size_mib * MiB, args.writes), flush=True)


if __name__ == "__main__":
    main()
