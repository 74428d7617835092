"""S3 packs written into a temporary file as they fill (``S3Backend.spool``/``put_spool``, issue 19
sixth round), as local ones are: the object stored (single PUT and multipart), the file gone once
put and after a failed put, only encrypted data in it, and a repository on S3 writing its packs this
way. moto on loopback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from safehold.repository import Repository
from safehold.repository.backends import Kind
from safehold.repository.backends.local import TEMP_PREFIX
from safehold.repository.backends.s3 import MIN_PART_SIZE, S3Backend, spool_directory
from safehold.repository.pack import BlobType

PASSWORD = b"spool correct horse"


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setenv("SAFEHOLD_SPOOL_DIR", str(folder))
    return folder


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize("size", [3 * 2**20, 2 * MIN_PART_SIZE + 123], ids=["single-put", "multipart"])
def test_a_spooled_object_is_stored_and_its_file_removed(moto, plain_bucket, spool_dir: Path, size: int):
    backend = S3Backend(f"s3://{plain_bucket}/spool", client=moto.client("s3"),
                        multipart_threshold=MIN_PART_SIZE, part_size=MIN_PART_SIZE)
    assert spool_directory() == spool_dir
    data = os.urandom(size)
    spool = backend.spool(Kind.DATA)
    [name] = leftovers(spool_dir)
    assert name.startswith(TEMP_PREFIX) and stat.S_IMODE((spool_dir / name).stat().st_mode) == 0o600
    for offset in range(0, size, 1_000_000):
        spool.write(data[offset:offset + 1_000_000])
    backend.put_spool(Kind.DATA, "a" * 64, spool)
    assert backend.get(Kind.DATA, "a" * 64) == data
    assert leftovers(spool_dir) == []


def test_a_failed_put_removes_the_file(moto, spool_dir: Path):
    backend = S3Backend("s3://no-such-bucket-spool/x", client=moto.client("s3"))
    spool = backend.spool(Kind.DATA)
    spool.write(b"x" * 1000)
    with pytest.raises(OSError):
        backend.put_spool(Kind.DATA, "b" * 64, spool)
    assert leftovers(spool_dir) == []


def test_a_repository_on_s3_spools_its_packs(moto, plain_bucket, spool_dir: Path, fast_kdf):
    backend = S3Backend(f"s3://{plain_bucket}/repo", client=moto.client("s3"))
    Repository.init(backend, PASSWORD)
    repository = Repository.open(backend, PASSWORD)
    repository.load_index()
    plain = [os.urandom(300_000) for _ in range(4)]
    ids = [repository.save_blob(BlobType.DATA, data)[0] for data in plain]
    [name] = leftovers(spool_dir)  # the pack being filled is a file, not memory
    assert all(data not in (spool_dir / name).read_bytes() for data in plain)  # encrypted blobs only
    repository.flush()
    assert leftovers(spool_dir) == []
    reopened = Repository.open(backend, PASSWORD)
    reopened.load_index()
    assert [reopened.read_blob(blob_id) for blob_id in ids] == plain


def test_a_spool_folder_that_fails_is_named_in_the_error(moto, plain_bucket, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, fast_kdf):
    """The spool of an S3 repository is on local disk: a missing or full spool folder is named in
    the error, or the user looks for the fault in the bucket ("repository storage")."""
    from safehold import errors
    from safehold.repository.backends import local as local_module

    backend = S3Backend(f"s3://{plain_bucket}/spool-errors", client=moto.client("s3"))
    Repository.init(backend, PASSWORD)
    repository = Repository.open(backend, PASSWORD)
    repository.load_index()
    missing = tmp_path / "no-such-folder"
    monkeypatch.setenv("SAFEHOLD_SPOOL_DIR", str(missing))
    with pytest.raises(errors.SafeholdError) as caught:
        repository.save_blob(BlobType.DATA, os.urandom(1000))
    assert str(missing) in str(caught.value), str(caught.value)

    folder = tmp_path / "full"
    folder.mkdir()
    monkeypatch.setenv("SAFEHOLD_SPOOL_DIR", str(folder))

    def full_disk(fd: int, data) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_module.os, "write", full_disk)
    with pytest.raises(errors.StorageFull) as full:
        repository.save_blob(BlobType.DATA, os.urandom(1000))
    monkeypatch.undo()
    assert str(folder) in str(full.value), str(full.value)
    assert leftovers(folder) == []
