"""Ransomware verdicts through the CLI, as an operator meets them: a quiet history, an attack
(files encrypted in place and under a new extension, a ransom note), the verdict in 'snapshots',
'status' and /metrics, 'latest-clean' restoring the data as it was, 'mark' and 'scan'."""

from __future__ import annotations

import os
import random
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from e2e_support import Workspace, assert_clean_error, make_workspace


def encrypt(data: bytes) -> bytes:
    return Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor().update(data)


def make_files(data: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    data.mkdir(parents=True, exist_ok=True)
    contents = {}
    for i in range(40):
        body = b"".join(b"%d invoice %d total %d EUR\n" % (i, n, rng.randrange(10_000)) for n in range(rng.randrange(50, 400)))
        contents[f"invoice{i:02}.csv"] = body
    contents["logo.png"] = b"\x89PNG\r\n\x1a\n" + rng.randbytes(30_000)
    for name, body in contents.items():
        (data / name).write_bytes(body)
    return contents


def test_an_attack_is_flagged_and_latest_clean_restores_the_data_before_it(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    original = make_files(ws.data)
    ws.run("init")
    ws.run("backup", "--target", "files")
    (ws.data / "invoice00.csv").write_bytes(original["invoice00.csv"] + b"late entry\n")
    ws.run("backup", "--target", "files")

    # The attack: 8 files encrypted in place, 6 rewritten encrypted as NAME.crypt, a note.
    for i in range(1, 9):
        path = ws.data / f"invoice{i:02}.csv"
        path.write_bytes(encrypt(path.read_bytes()))
    for i in range(9, 15):
        path = ws.data / f"invoice{i:02}.csv"
        (ws.data / f"invoice{i:02}.csv.crypt").write_bytes(encrypt(path.read_bytes()))
        path.unlink()
    (ws.data / "HOW_TO_RECOVER_YOUR_FILES.txt").write_text("send 1 BTC\n")
    ws.run("backup", "--target", "files")  # exit 0: a verdict never fails a backup
    # A later backup where nothing changes is still no restore point: it holds the encrypted files.
    ws.run("backup", "--target", "files")
    rows = ws.json("snapshots", "--target", "files", "--json")
    assert [(row["verdict"]["verdict"], row["verdict"]["clean_point"]) for row in rows] == [
        ("unknown", False), ("clean", True), ("suspicious", False), ("clean", False)]
    clean, attacked, after = rows[1]["id"], rows[2], rows[3]["id"]
    assert rows[3]["verdict"]["after_suspicious"] == attacked["id"]
    assert attacked["verdict"]["verdict"] == "suspicious" and not attacked["verdict"]["clean_point"]
    reasons = {reason["signal"]: reason for reason in attacked["verdict"]["reasons"]}
    assert {"type_changed", "extension_churn", "ransom_notes"} <= set(reasons)
    assert reasons["type_changed"]["value"] == 14
    assert reasons["extension_churn"]["extension"] == "crypt"
    assert reasons["ransom_notes"]["files"] == ["data/HOW_TO_RECOVER_YOUR_FILES.txt"]
    assert attacked["signals"]["deleted"] == 6 and attacked["signals"]["added"] == 7
    table = ws.run("snapshots", "--target", "files", "--clean")
    assert rows[1]["short_id"] in table.stdout and "1 snapshot(s)" in table.stdout
    assert attacked["short_id"] not in table.stdout and rows[3]["short_id"] not in table.stdout
    status = ws.json("status", "--json")
    state = next(t for t in status["targets"] if t["name"] == "files")["ransomware"]
    assert state["suspicious"] is True and state["since"] == attacked["id"] and state["latest_clean"] == clean

    # latest-clean restores the data as it was before the attack.
    restored = tmp_path / "restored"
    ws.run("restore", "latest-clean:files", "--to", str(restored))
    for name, body in original.items():
        expected = body + b"late entry\n" if name == "invoice00.csv" else body
        assert (restored / "data" / name).read_bytes() == expected, name
    assert not (restored / "data" / "HOW_TO_RECOVER_YOUR_FILES.txt").exists()

    # scan recomputes the verdict of a stored snapshot from its data
    scanned = ws.json("scan", attacked["id"][:12], "--json")
    assert scanned["verdict"]["verdict"] == "suspicious" and scanned["verdict"]["source"] == "scan"
    assert scanned["signals"]["type_changed"] == 14

    # The operator restored the data and marks the newest snapshot clean: the alarm ends there.
    marked = ws.json("mark", after[:12], "clean", "--note", "restored after incident 7", "--json")
    assert marked["verdict"]["source"] == "operator" and marked["verdict"]["note"] == "restored after incident 7"
    assert marked["state"] == {"snapshot": after, "verdict": "clean", "score": 0.0, "suspicious": False,
                               "since": None, "latest_clean": after}
    status = ws.json("status", "--json")
    state = next(t for t in status["targets"] if t["name"] == "files")["ransomware"]
    assert state["suspicious"] is False and state["latest_clean"] == after


def test_latest_clean_without_a_clean_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    make_files(ws.data)
    ws.run("init")
    ws.run("backup", "--target", "files")  # a first snapshot is 'unknown'
    assert_clean_error(ws.run("restore", "latest-clean:files", "--to", str(tmp_path / "out"), ok=False), 90,
                       "'files'")
    assert_clean_error(ws.run("mark", "latest:files", "fine", ok=False), 91, "fine")
