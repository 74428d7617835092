"""The README's first command, after bootstrap.sh has installed safehold into .venv.

Drives the real ``safehold`` CLI (the commands are printed as they run), so
everything shown here is what a user would type.
"""

from __future__ import annotations

import filecmp
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
CONFIG = ROOT / "configs" / "targets.yml"
# The safehold installed beside the Python running this script (.venv when started by quickstart.sh).
SAFEHOLD = [str(Path(sys.executable).parent / "safehold"), "--config", str(CONFIG)]


def human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def safehold(*args: str, capture: bool = False, echo: bool = True) -> str:
    if echo:
        print(f"\n$ safehold {' '.join(shlex.quote(a) for a in args)}", flush=True)
    result = subprocess.run(SAFEHOLD + list(args), text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        sys.exit(f"quickstart: 'safehold {' '.join(args)}' failed with exit code {result.returncode}")
    return result.stdout or ""


def password() -> None:
    if os.environ.get("SAFEHOLD_PASSWORD"):
        return
    path = VAR / "password"
    if not path.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
        print(f"generated a repository password in {path} (mode 600); keep it: without it nothing can be restored")
    os.environ["SAFEHOLD_PASSWORD"] = path.read_text().strip()


def trees_equal(left: Path, right: Path) -> list[str]:
    """Byte-for-byte comparison of two trees (content, symlink targets, modes). Returns differences."""
    problems = []
    for directory, dirnames, filenames in os.walk(left):
        for name in dirnames + filenames:
            a = Path(directory) / name
            b = right / a.relative_to(left)
            if a.is_symlink():
                if not b.is_symlink() or os.readlink(a) != os.readlink(b):
                    problems.append(f"symlink differs: {b}")
            elif not b.exists() and not b.is_symlink():
                problems.append(f"missing: {b}")
            elif a.is_file() and not filecmp.cmp(a, b, shallow=False):
                problems.append(f"content differs: {b}")
            elif a.stat().st_mode != b.lstat().st_mode:
                problems.append(f"mode differs: {b}")
    count_left = sum(len(d) + len(f) for _, d, f in os.walk(left))
    count_right = sum(len(d) + len(f) for _, d, f in os.walk(right))
    if count_left != count_right:
        problems.append(f"{count_right} entries restored, {count_left} in the source")
    return problems


def main() -> int:
    started = time.monotonic()
    password()
    print(f"configuration: {CONFIG}\nrepository:    {VAR / 'repo'}\ncatalog:       {VAR / 'state' / 'catalog.db'}")
    if not (VAR / "repo" / "config").exists():
        safehold("init")
    run = json.loads(safehold("backup", "--all", "--json", capture=True))
    paths = {s["id"]: s["paths"] for s in json.loads(safehold("snapshots", "--json", capture=True, echo=False))}
    for result in run["results"]:
        s = result["summary"]
        kind = "incremental" if result["parent_id"] else "full"
        print(f"  {result['target']}: {kind} snapshot {result['snapshot_id'][:8]}, read {human(s['bytes_read'])} "
              f"of {human(s['bytes_total'])}, new data stored {human(s['bytes_added'])}")
    safehold("snapshots")

    restore_root = VAR / "restore" / datetime.now().strftime("%Y%m%d-%H%M%S")
    checks = []
    for result in run["results"]:
        target = result["target"]
        snapshot = result["snapshot_id"][:8]
        if result["kind"] == "files":
            destination = restore_root / target
            safehold("restore", snapshot, "--to", str(destination))
            for source_path in paths[result["snapshot_id"]]:
                source = Path(source_path)
                problems = trees_equal(source, destination / source.name)
                checks.append((target, str(source), problems))
        else:
            destination = restore_root / f"{target}.img"
            safehold("restore", snapshot, "--to", str(destination))
            source = Path(paths[result["snapshot_id"]][0])
            same = filecmp.cmp(source, destination, shallow=False)
            checks.append((target, str(source), [] if same else [f"image differs: {destination}"]))

    print("\nsummary")
    print(f"  snapshots made:  {len(run['results'])}  (failures: {len(run['failures'])})")
    added = sum(r["summary"]["bytes_added"] for r in run["results"])
    total = sum(r["summary"]["bytes_total"] for r in run["results"])
    print(f"  new data stored: {human(added)} for {human(total)} backed up")
    ok = True
    for target, source, problems in checks:
        verdict = "byte-identical" if not problems else f"MISMATCH ({'; '.join(problems[:3])})"
        ok = ok and not problems
        print(f"  verify {target}: restore of {source} is {verdict}")
    print(f"  restored into:   {restore_root}")
    print(f"  took {time.monotonic() - started:.1f}s; run it again for an incremental snapshot, "
          f"'.venv/bin/safehold --config configs/targets.yml jobs' shows the job history")
    return 0 if ok and not run["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
