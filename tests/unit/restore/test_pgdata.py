"""A physical postgres snapshot's base.tar is hostile input: nothing it holds is written outside
the data directory, and links and special files are not made."""

from __future__ import annotations

import io
import os
import tarfile

from hostile_support import file, write_snapshot

from safehold.restore.pgdata import extract_base_tar


def member(archive: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
           target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data) if kind == tarfile.REGTYPE else 0, target, 0o4777
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_a_hostile_base_tar_stays_inside_the_data_directory(memory_repository, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member(archive, "PG_VERSION", b"15\n")
        member(archive, "global", kind=tarfile.DIRTYPE)
        member(archive, "global/pg_control", os.urandom(8192))
        member(archive, "../escaped", b"x")
        member(archive, "/etc/absolute", b"x")
        member(archive, "pg_tblspc/link", kind=tarfile.SYMTYPE, target=str(tmp_path / "outside"))
        member(archive, "pg_tblspc/link/through", b"x")
        member(archive, "hard", kind=tarfile.LNKTYPE, target="../escaped")
        member(archive, "null", kind=tarfile.CHRTYPE)
    (tmp_path / "outside").mkdir()
    snapshot = write_snapshot(memory_repository, [file(b"base.tar", buffer.getvalue())])
    item = next(i for i in memory_repository.read_tree(snapshot) if i["path"] == b"base.tar")
    data = tmp_path / "data"
    data.mkdir()
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        files, written, skipped = extract_base_tar(memory_repository, item, fd, owner=None, progress=lambda done: None)
    finally:
        os.close(fd)
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    # "/etc/absolute" is taken as relative (etc/absolute, inside); "pg_tblspc/link/through" lands in a real
    # directory made below the data directory, never through a link.
    assert found == ["data", "data/PG_VERSION", "data/etc", "data/etc/absolute", "data/global",
                     "data/global/pg_control", "data/pg_tblspc", "data/pg_tblspc/link", "data/pg_tblspc/link/through",
                     "outside"]
    assert (data / "PG_VERSION").read_bytes() == b"15\n"
    assert oct((data / "PG_VERSION").stat().st_mode & 0o7777) == "0o600"  # setuid and the rest cleared
    assert files == 4 and written == 3 + 8192 + 1 + 1
    assert any("escaped: unsafe name" in line for line in skipped)
    assert any("pg_tblspc/link: link" in line for line in skipped)
    assert any("hard: link" in line for line in skipped) and any("null: special file" in line for line in skipped)
    assert not (tmp_path / "escaped").exists() and list((tmp_path / "outside").iterdir()) == []
