"""Names from a snapshot never reach the terminal raw: ls, diff, restore and the job log escape them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from e2e_support import make_workspace

EVIL = "evil\x1b]0;owned\x07\x1b[2J\x9b31mname"


def test_control_characters_in_names_are_escaped_everywhere_they_are_printed(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws")
    workspace.write_config([{"name": "files", "tier": 2, "source": {"type": "files", "paths": ["data"]}}])
    (workspace.data / EVIL).write_bytes(b"x")
    os.symlink("target\x1b[0m", workspace.data / "link\x1b[31m")
    workspace.run("init")
    workspace.run("backup", "--target", "files")
    suid = workspace.data / f"suid{EVIL}"
    suid.write_bytes(b"#!/bin/sh\n")
    os.chmod(suid, 0o4755)
    workspace.run("backup", "--target", "files")
    first, second = (snapshot["id"] for snapshot in workspace.json("snapshots"))
    outputs = [workspace.run("ls", second), workspace.run("diff", first, second),
               workspace.run("restore", second, "--to", tmp_path / "restored")]
    job = workspace.json("jobs", "--kind", "restore")[0]["id"]
    outputs.append(workspace.run("jobs", "--id", str(job)))
    for proc in outputs:
        for stream in (proc.stdout, proc.stderr):
            assert not any(char in stream for char in "\x1b\x07\x9b"), stream
    assert "evil\\x1b]0;owned\\x07\\x1b[2J\\x9b31mname" in outputs[0].stdout
    assert "setuid/setgid bits removed" in outputs[2].stderr and "setuid/setgid" in outputs[3].stdout
    assert any(path.name == EVIL for path in (tmp_path / "restored").rglob("*"))  # files keep their names
    found = json.loads(workspace.run("restore", second, "--to", tmp_path / "again", "--json").stdout)
    assert any("setuid" in line for line in found["special"])
