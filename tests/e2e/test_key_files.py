"""Key files through the CLI: a tampered parameter set is refused at once with its own exit code,
and --key-id / SAFEHOLD_KEY_ID pick the key file to try."""

from __future__ import annotations

import json
import os
import re

from e2e_support import Workspace, assert_clean_error


def test_absurd_kdf_parameters_are_refused_before_deriving(workspace: Workspace) -> None:
    workspace.run("init")
    (key_name,) = os.listdir(workspace.repo / "keys")
    path = workspace.repo / "keys" / key_name
    document = json.loads(path.read_text())
    assert document["version"] == 2
    document["kdf"]["memory_kib"] = 2**40  # a terabyte: this used to hang or end in "this is a bug"
    path.write_text(json.dumps(document))
    proc = workspace.run("snapshots", code=26, timeout=60)
    line = assert_clean_error(proc, 26, key_name[:8], "kdf.memory_kib", "out of bounds")
    assert "1048576" in line


def test_key_id_selects_the_key_file(workspace: Workspace) -> None:
    workspace.run("init")
    (first,) = os.listdir(workspace.repo / "keys")
    added = workspace.run("key", "add", env={"SAFEHOLD_NEW_PASSWORD": "second password"}).stdout
    second = re.fullmatch(r"added key ([0-9a-f]{8})\n", added).group(1)
    keys = workspace.json("--key-id", second, "key", "list", password="second password")
    assert [k["id"][:8] for k in keys if k["current"]] == [second]
    assert {k["version"] for k in keys} == {2}
    # The first key with the second password: only that key is tried, so the password is wrong.
    proc = workspace.run("snapshots", env={"SAFEHOLD_KEY_ID": first[:8]}, password="second password", code=13)
    assert_clean_error(proc, 13, "does not open")
    proc = workspace.run("--key-id", "ffffffff", "snapshots", code=15)
    assert_clean_error(proc, 15, "ffffffff")
