"""KVM/libvirt incremental vs full: time and bytes on a >= 1 GiB disk with ~1 % of its blocks changed.

    python bench/libvirt_incremental.py [--size-gib 1] [--changed-percent 1] [--repeat 3]

Needs root, libvirtd with QEMU (started with scripts/services.d/libvirt.sh when none answers) and
the venv that scripts/bootstrap.sh makes (Debian's python3-libvirt and python3-libnbd visible).
For each chunk size it: fills a qcow2 disk with random data (incompressible, every block
allocated: the worst case for a full backup), starts a tiny domain (QEMU TCG, no OS) on it, takes
a full safehold backup, then ``--repeat`` times writes random data into ~1 % of the disk's 64 KiB
blocks (distinct random blocks, through the QEMU monitor, as a guest would) and takes an
incremental backup; the last incremental is restored and compared with the disk (``qemu-img
compare``), untimed. Backups run in this process through ``safehold.engine.backup.backup_target``;
before each one the page cache is dropped (when permitted) so QEMU reads the image cold.

Writes the section "KVM/libvirt: incremental vs full" into docs/benchmarks.md (between markers;
``bench/run.py`` keeps it when it rewrites the file), bench/libvirt.md and bench/libvirt-results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVICE = ROOT / "scripts" / "services.d" / "libvirt.sh"
BEGIN, END = "<!-- libvirt-bench:begin -->", "<!-- libvirt-bench:end -->"
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024
PASSWORD = "libvirt benchmark password"

DOMAIN_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
<emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{path}'/>
<target dev='vda' bus='virtio'/></disk><video><model type='none'/></video><memballoon model='none'/>
</devices></domain>"""


def log(message: str) -> None:
    print(f"[libvirt-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    text = text.strip()
    for unit, factor in (("KiB", KiB), ("MiB", MiB), ("GiB", GiB)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def drop_caches() -> bool:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


class Libvirtd:
    """A libvirtd to talk to: the given URI when it answers, else one started with the service script."""

    def __init__(self, uri: str) -> None:
        import libvirt

        self.uri, self.scratch = uri, None
        try:
            libvirt.open(uri).close()
            return
        except libvirt.libvirtError:
            pass
        self.scratch = tempfile.mkdtemp(prefix="safehold-bench-libvirtd-")
        env = dict(os.environ, SAFEHOLD_TEST_SCRATCH=self.scratch)
        subprocess.run(["bash", str(SERVICE), "install"], check=True, env=env)
        subprocess.run(["bash", str(SERVICE), "start"], check=True, env=env, stdout=subprocess.DEVNULL)

    def close(self) -> None:
        if self.scratch:
            subprocess.run(["bash", str(SERVICE), "stop"], env=dict(os.environ, SAFEHOLD_TEST_SCRATCH=self.scratch),
                           check=False)
            shutil.rmtree(self.scratch, ignore_errors=True)


def random_image(path: Path, size: int, rng) -> None:
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as f:
        for _ in range(0, size, 64 * MiB):
            f.write(rng.bytes(min(64 * MiB, size - f.tell())))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()


def monitor(domain, command: str) -> str:
    import libvirt_qemu

    line = f'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "{command}"'
    output = libvirt_qemu.qemuMonitorCommand(domain, line, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    if "error" in output.lower() or "failed" in output.lower():
        raise RuntimeError(f"qemu-io {command!r}: {output.strip()}")
    return output


def change_blocks(domain, size: int, percent: float, write_size: int, rng, folder: Path) -> int:
    """Write fresh random data into distinct random write_size blocks covering ``percent`` of the disk."""
    count = max(1, round(size * percent / 100 / write_size))
    blocks = rng.choice(size // write_size, size=count, replace=False)
    source = folder / "block.bin"
    for block in sorted(int(b) for b in blocks):
        source.write_bytes(rng.bytes(write_size))
        monitor(domain, f"write -s {source} {block * write_size} {write_size}")
    monitor(domain, "flush")
    source.unlink()
    return count * write_size


def backup(context) -> dict:
    from safehold.engine.backup import backup_target

    drop_caches()
    started = time.monotonic()
    result = backup_target(context, "vm")
    wall = time.monotonic() - started
    s = result.summary
    return {"snapshot": result.snapshot_id, "wall_s": wall, "bytes_read": s["bytes_read"],
            "bytes_added": s["bytes_added"], "plain_bytes_added": s["plain_bytes_added"],
            "chunks_reused_unread": s["chunks_reused_unread"], "holes": s["holes"]}


def run_scenario(args, connection, uri: str, chunk_size: int, write_size: int, workdir: Path, rng) -> dict:
    from safehold.engine.context import Context
    from safehold.engine.restore import restore_snapshot
    from safehold.engine.maintenance import init_repository

    folder = workdir / f"chunk-{chunk_size // KiB}k-writes-{write_size // KiB}k"
    folder.mkdir(parents=True)
    image = folder / "disk.qcow2"
    log(f"chunk {chunk_size // KiB} KiB, writes {write_size // KiB} KiB: writing a {args.size_gib} GiB random qcow2 disk")
    random_image(image, int(args.size_gib * GiB), rng)
    name = f"safehold-test-bench-{os.getpid()}-{chunk_size // KiB}k-{write_size // KiB}k"
    domain = connection.defineXML(DOMAIN_XML.format(name=name, path=image))
    try:
        domain.create()
        config = folder / "targets.yml"
        config.write_text(textwrap.dedent(f"""\
            repository: {{url: {folder / 'repo'}, password_env: SAFEHOLD_BENCH_PASSWORD}}
            catalog: {{url: "sqlite:///{folder / 'catalog.db'}"}}
            targets:
              - name: vm
                tier: 2
                source: {{type: libvirt, domain: {name}, uri: "{uri}", chunk_size: {chunk_size}}}
            """))
        os.environ["SAFEHOLD_BENCH_PASSWORD"] = PASSWORD
        context = Context.load(config)
        init_repository(context)
        log("full backup")
        full = backup(context)
        log(f"full: {full['wall_s']:.2f} s, read {full['bytes_read'] / MiB:.0f} MiB")
        incrementals = []
        for run in range(args.repeat):
            changed = change_blocks(domain, int(args.size_gib * GiB), args.changed_percent, write_size, rng, folder)
            incremental = backup(context) | {"bytes_changed": changed}
            log(f"incremental {run + 1}: {incremental['wall_s']:.2f} s, read {incremental['bytes_read'] / MiB:.1f} "
                f"MiB, added {incremental['bytes_added'] / MiB:.1f} MiB for {changed / MiB:.1f} MiB changed")
            incrementals.append(incremental)
        # Untimed: the last incremental restores to exactly the disk as it is now.
        restored = restore_snapshot(context, incrementals[-1]["snapshot"],
                                    {"kind": "libvirt", "images_dir": str(folder / "restored"), "format": "raw"})
        compare = subprocess.run(["qemu-img", "compare", "-U", str(image), restored.details["disks"]["vda"]],
                                 capture_output=True, text=True)
        context.close()
        return {"chunk_size": chunk_size, "write_size": write_size, "full": full, "incrementals": incrementals,
                "restore_identical": compare.returncode == 0, "compare_output": compare.stdout.strip()}
    finally:
        import libvirt

        if domain.isActive():
            domain.destroy()
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "## KVM/libvirt: incremental vs full",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} (safehold {meta['commit']}; {meta['machine']}); "
        f"{meta['runtime_s']:.0f} s in all; 1-minute load average {meta['load_average'][0]} at the start and "
        f"{meta['load_average'][1]} at the end (other work shared the 2 cores). Do not edit by hand: run the "
        "command again.",
        "",
        f"A {meta['size_gib']} GiB qcow2 disk full of random data (incompressible, every block allocated) on a "
        "domain running under QEMU TCG; after the full backup, each incremental follows fresh random writes to "
        f"{meta['changed_percent']} % of the disk, as distinct blocks of the write size at random aligned offsets, "
        "written through the QEMU monitor. Incremental figures are the median of "
        f"{meta['repeat']} runs. Wall time is the whole `backup_target` call: checkpoint and backup job, NBD, "
        "reading, storing, the snapshot, the catalog. *Added* is what the repository grew by (compressed and "
        "encrypted); *plain* the same chunks before compression.",
        "",
        "| chunk size | writes | full s | incremental s (min-max) | speed-up | full read | incremental read | "
        "changed | incremental added (plain) | added / changed | goal met | restore identical |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in results["runs"]:
        full, incs = row["full"], row["incrementals"]
        walls = [i["wall_s"] for i in incs]
        wall = statistics.median(walls)
        read = statistics.median(i["bytes_read"] for i in incs)
        added = statistics.median(i["bytes_added"] for i in incs)
        plain = statistics.median(i["plain_bytes_added"] for i in incs)
        changed = statistics.median(i["bytes_changed"] for i in incs)
        speedup, ratio = full["wall_s"] / wall, added / changed
        lines.append(
            f"| {row['chunk_size'] // KiB} KiB | {row['write_size'] // KiB} KiB | {full['wall_s']:.2f} | "
            f"{wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {speedup:.1f}x | {full['bytes_read'] / MiB:.0f} MiB | "
            f"{read / MiB:.1f} MiB | {changed / MiB:.1f} MiB | {added / MiB:.1f} MiB ({plain / MiB:.1f} MiB) | "
            f"{ratio:.2f}x | {'yes' if speedup >= 20 and ratio <= 3 else 'no'} | "
            f"{'yes' if row['restore_identical'] else 'NO: ' + row['compare_output']} |")
    lines += [
        "",
        "Goal (issue 7): the incremental at least 20x faster than the full backup, and bytes added within 3x of "
        "the bytes changed. The dirty bitmap has 64 KiB granularity and a changed chunk is read and stored "
        "whole, so what an incremental costs depends on the chunk size against the spread of the writes: "
        "scattered 64 KiB writes cost about what changed with `chunk_size: 64KiB` and up to 8x that with the "
        "default 512 KiB chunks; writes of 1 MiB (clustered, as file-system allocations tend to be) cost about "
        "what changed with the default. A target whose guest writes small scattered blocks should set "
        "`chunk_size: 64KiB`, at the price of an index 8x larger for that disk. The incremental's fixed part "
        "(checkpoint and backup job, NBD connection and block status, ending the job, pruning a checkpoint, "
        "the snapshot and catalog) is about 0.1 s. The full backup reads the whole disk and hashes, tries to "
        "compress and encrypts every chunk on 2 cores shared with other work, so its time varies most between "
        "runs; every number comes from this one machine under that load.",
        "",
    ]
    return "\n".join(lines)


def write_section(docs: Path, section: str) -> None:
    text = docs.read_text() if docs.exists() else ""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip() + "\n\n" + block
    docs.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--changed-percent", type=float, default=1.0)
    parser.add_argument("--scenarios", default="64KiB:64KiB,512KiB:64KiB,512KiB:1MiB",
                        help="comma-separated CHUNK_SIZE:WRITE_SIZE pairs (safehold chunk size, size of each guest write)")
    parser.add_argument("--repeat", type=int, default=3, help="incremental runs per chunk size")
    parser.add_argument("--uri", default=os.environ.get("SAFEHOLD_TEST_LIBVIRT_URI", "qemu:///system"))
    parser.add_argument("--workdir", default="/var/tmp/safehold-bench-libvirt", help="images and repositories (wiped)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--section", default=str(HERE / "libvirt.md"))
    parser.add_argument("--json", default=str(HERE / "libvirt-results.json"))
    args = parser.parse_args(argv)

    import libvirt
    import numpy

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    rng = numpy.random.default_rng(args.seed)
    daemon = Libvirtd(args.uri)
    try:
        connection = libvirt.open(args.uri)
        runs = [run_scenario(args, connection, args.uri, *(parse_size(part) for part in scenario.split(":")),
                             workdir, rng) for scenario in args.scenarios.split(",")]
        connection.close()
    finally:
        daemon.close()
        shutil.rmtree(workdir, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    command = "python bench/libvirt_incremental.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    results = {
        "meta": {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "commit": commit, "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
                 "size_gib": args.size_gib, "changed_percent": args.changed_percent,
                 "repeat": args.repeat, "seed": args.seed, "runtime_s": time.monotonic() - started,
                 "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "runs": runs,
    }
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    section = markdown(results)
    Path(args.section).write_text(section)
    write_section(Path(args.docs), section)
    log(f"wrote {args.docs}, {args.section} and {args.json}")
    return 0 if all(run["restore_identical"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
