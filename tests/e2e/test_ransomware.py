"""Ransomware verdicts through the CLI, as an operator meets them: a quiet history, an attack
(files encrypted in place and under a new extension, a ransom note) flagged in 'snapshots', and
'restore latest-clean:TARGET' giving back the data as it was. Six CLI calls: the rest (status,
scan, mark, the snapshots after an attack, exit codes) is tested in process against the same engine
in tests/unit/engine/test_verdicts.py."""

from __future__ import annotations

import random
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from e2e_support import make_workspace


def encrypt(data: bytes) -> bytes:
    keys = random.Random(data)  # a key drawn from the plaintext: every run judges the same ciphertext
    return Cipher(algorithms.AES(keys.randbytes(32)), modes.CTR(keys.randbytes(16))).encryptor().update(data)


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
    rows = ws.json("snapshots", "--target", "files", "--json")
    assert [(row["verdict"]["verdict"], row["verdict"]["clean_point"]) for row in rows] == [
        ("unknown", False), ("clean", True), ("suspicious", False)]
    reasons = {reason["signal"] for reason in rows[2]["verdict"]["reasons"]}
    assert {"type_changed", "extension_churn", "ransom_notes"} <= reasons

    # latest-clean restores the data as it was before the attack.
    restored = tmp_path / "restored"
    ws.run("restore", "latest-clean:files", "--to", str(restored))
    for name, body in original.items():
        expected = body + b"late entry\n" if name == "invoice00.csv" else body
        assert (restored / "data" / name).read_bytes() == expected, name
    assert not (restored / "data" / "HOW_TO_RECOVER_YOUR_FILES.txt").exists()
    assert not (restored / "data" / "invoice09.csv.crypt").exists()
