"""The storage-backend contract (``safehold.repository.backends.base.Backend``).

One suite, run against every backend. To add a backend (S3 against MinIO, say),
append a factory to ``BACKEND_FACTORIES``: a function taking pytest's
``tmp_path`` and returning a :class:`Harness`. S3 runs against a moto server
process on loopback (``tests/aws/moto_support.py``), with and without Object Lock.
"""

from __future__ import annotations

import inspect
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from safehold.repository.backends import Backend, Kind, MUTABLE_KINDS, ObjectExists, ObjectInfo, ObjectNotFound
from safehold.repository.backends.local import TEMP_PREFIX, LocalBackend
from safehold.repository.backends.memory import MemoryBackend

NAMED_KINDS = [k for k in Kind if k is not Kind.CONFIG]


@dataclass
class Harness:
    """A backend under test plus what the suite cannot do through the contract itself."""

    backend: Backend
    # Leave what a writer killed mid-put leaves behind (None: the backend has no such state).
    leave_interrupted_write: Callable[[Kind, str, bytes], None] | None = None


def _local(tmp_path: Path) -> Harness:
    backend = LocalBackend(tmp_path / "store")

    def interrupted(kind: Kind, name: str, data: bytes) -> None:
        # What LocalBackend.put leaves if killed before the rename.
        directory = backend._path(kind, name).parent
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{TEMP_PREFIX}{name}-deadbeef").write_bytes(data)

    return Harness(backend, interrupted)


def _memory(tmp_path: Path) -> Harness:
    return Harness(MemoryBackend())


def _s3(tmp_path: Path, object_lock: bool = False) -> Harness:
    # A moto server process on loopback (tests/aws/moto_support.py), one per session.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))
    import moto_support

    from safehold.repository.backends.s3 import S3Backend

    server = moto_support.shared_server()
    bucket = moto_support.make_bucket(server, object_lock=object_lock)
    client = server.client("s3")
    backend = S3Backend(f"s3://{bucket}/repo/{tmp_path.name}", client=client,
                        object_lock_mode="GOVERNANCE" if object_lock else None, object_lock_days=1)

    def interrupted(kind: Kind, name: str, data: bytes) -> None:
        # What S3Backend.put leaves if killed mid-upload: a multipart upload never completed.
        upload = client.create_multipart_upload(Bucket=bucket, Key=backend.key(kind, name))
        client.upload_part(Bucket=bucket, Key=backend.key(kind, name), UploadId=upload["UploadId"],
                           PartNumber=1, Body=data)

    return Harness(backend, interrupted)


BACKEND_FACTORIES: list[tuple[str, Callable[[Path], Harness]]] = [
    ("local", _local),
    ("memory", _memory),
    ("s3", _s3),
    ("s3-object-lock", lambda tmp_path: _s3(tmp_path, object_lock=True)),
]


@pytest.fixture(params=[factory for _, factory in BACKEND_FACTORIES], ids=[name for name, _ in BACKEND_FACTORIES])
def fresh_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    """A backend on which ``create()`` has not been called yet."""
    return request.param(tmp_path)


@pytest.fixture
def harness(fresh_harness: Harness) -> Harness:
    fresh_harness.backend.create()
    return fresh_harness


@pytest.fixture
def backend(harness: Harness) -> Backend:
    return harness.backend


def hexname(i: int) -> str:
    # Content-addressed names look like this; spread over many first bytes.
    return f"{(i * 2654435761) % 2**32:08x}" + f"{i:056x}"


# --- protocol ---------------------------------------------------------------------


def test_satisfies_the_backend_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend.url, str) and backend.url
    assert isinstance(backend.supports_retention, bool)


@pytest.mark.parametrize("method", ["put", "get", "stat", "list", "delete", "exists", "create"])
def test_method_signatures_match_the_protocol(backend: Backend, method: str) -> None:
    # runtime_checkable only checks that the names exist; callers pass keywords, so check them too.
    expected = inspect.signature(getattr(Backend, method))
    actual = inspect.signature(getattr(type(backend), method))
    assert [(p.name, p.kind, p.default) for p in actual.parameters.values()] == [
        (p.name, p.kind, p.default) for p in expected.parameters.values()
    ]


# --- put / get / stat ----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_put_then_get_returns_the_same_bytes(backend: Backend, kind: Kind) -> None:
    name = "config" if kind is Kind.CONFIG else hexname(1)
    data = bytes(range(256)) * 3
    backend.put(kind, name, data)
    assert backend.get(kind, name) == data
    assert backend.stat(kind, name) == ObjectInfo(name, len(data))


def test_empty_object_round_trips(backend: Backend) -> None:
    backend.put(Kind.DATA, hexname(2), b"")
    assert backend.get(Kind.DATA, hexname(2)) == b""
    assert backend.stat(Kind.DATA, hexname(2)).size == 0


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 10), (10, 5), (0, None), (17, None), (999, 1), (1000, None), (500, 0)]
)
def test_range_get(backend: Backend, offset: int, length: int | None) -> None:
    data = bytes(i % 251 for i in range(1000))
    backend.put(Kind.DATA, hexname(5), data)
    end = None if length is None else offset + length
    assert backend.get(Kind.DATA, hexname(5), offset, length) == data[offset:end]
    assert backend.get(Kind.DATA, hexname(5), offset=offset, length=length) == data[offset:end]


@pytest.mark.parametrize("kind", NAMED_KINDS)
def test_get_and_stat_of_a_missing_object_raise_object_not_found(backend: Backend, kind: Kind) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        backend.get(kind, hexname(6))
    assert caught.value.kind is kind and caught.value.name == hexname(6)
    assert isinstance(caught.value, LookupError)
    with pytest.raises(ObjectNotFound):
        backend.get(kind, hexname(6), 0, 10)
    with pytest.raises(ObjectNotFound):
        backend.stat(kind, hexname(6))


def test_missing_config_raises_object_not_found(backend: Backend) -> None:
    with pytest.raises(ObjectNotFound):
        backend.get(Kind.CONFIG, "config")
    with pytest.raises(ObjectNotFound):
        backend.stat(Kind.CONFIG, "config")


def test_same_name_in_different_kinds_are_different_objects(backend: Backend) -> None:
    for i, kind in enumerate(NAMED_KINDS):
        backend.put(kind, hexname(7), bytes([i]) * (i + 1))
    for i, kind in enumerate(NAMED_KINDS):
        assert backend.get(kind, hexname(7)) == bytes([i]) * (i + 1)
    backend.delete(Kind.DATA, hexname(7))
    assert backend.get(Kind.INDEX, hexname(7)) == bytes([NAMED_KINDS.index(Kind.INDEX)]) * (
        NAMED_KINDS.index(Kind.INDEX) + 1
    )


# --- exclusive put and overwrite ---------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_exclusive_put_refuses_an_existing_object_and_keeps_it(backend: Backend, kind: Kind) -> None:
    name = "config" if kind is Kind.CONFIG else hexname(8)
    backend.put(kind, name, b"first", exclusive=True)
    with pytest.raises(ObjectExists):
        backend.put(kind, name, b"second", exclusive=True)
    assert backend.get(kind, name) == b"first"


def test_exclusive_put_after_delete_succeeds(backend: Backend) -> None:
    backend.put(Kind.LOCKS, hexname(9), b"one", exclusive=True)
    backend.delete(Kind.LOCKS, hexname(9))
    backend.put(Kind.LOCKS, hexname(9), b"two", exclusive=True)
    assert backend.get(Kind.LOCKS, hexname(9)) == b"two"


@pytest.mark.parametrize("kind", sorted(MUTABLE_KINDS, key=lambda k: k.value))
def test_mutable_kinds_can_be_overwritten(backend: Backend, kind: Kind) -> None:
    name = "config" if kind is Kind.CONFIG else hexname(10)
    backend.put(kind, name, b"old contents, longer than the new")
    backend.put(kind, name, b"new")
    assert backend.get(kind, name) == b"new"
    assert backend.stat(kind, name).size == 3
    assert [info.name for info in backend.list(kind)] == [name]


def test_put_with_retain_until_is_accepted(backend: Backend) -> None:
    from datetime import datetime, timedelta, timezone

    until = datetime.now(timezone.utc) + timedelta(days=1)
    backend.put(Kind.DATA, hexname(11), b"kept", retain_until=until)
    assert backend.get(Kind.DATA, hexname(11)) == b"kept"
    if not backend.supports_retention:
        backend.delete(Kind.DATA, hexname(11))  # ignored retention: deletion still works
        with pytest.raises(ObjectNotFound):
            backend.stat(Kind.DATA, hexname(11))


# --- list ------------------------------------------------------------------------------------


def test_list_yields_every_object_of_the_kind_with_sizes(backend: Backend) -> None:
    expected = {hexname(i): i * 7 for i in range(40)}
    for name, size in expected.items():
        backend.put(Kind.DATA, name, b"d" * size)
    backend.put(Kind.INDEX, hexname(1000), b"index")
    backend.put(Kind.SNAPSHOTS, hexname(1001), b"snapshot")
    listed = list(backend.list(Kind.DATA))
    assert len(listed) == len(expected)  # no duplicates
    assert {info.name: info.size for info in listed} == expected
    assert [info.name for info in backend.list(Kind.INDEX)] == [hexname(1000)]
    assert [info.name for info in backend.list(Kind.SNAPSHOTS)] == [hexname(1001)]
    assert list(backend.list(Kind.KEYS)) == []


def test_list_of_an_empty_kind_yields_nothing(backend: Backend) -> None:
    for kind in Kind:
        assert list(backend.list(kind)) == []


def test_list_config(backend: Backend) -> None:
    backend.put(Kind.CONFIG, "config", b"{}")
    assert list(backend.list(Kind.CONFIG)) == [ObjectInfo("config", 2)]


@pytest.mark.parametrize("kind", NAMED_KINDS)
def test_list_ignores_interrupted_writes(harness: Harness, kind: Kind) -> None:
    if harness.leave_interrupted_write is None:
        pytest.skip("this backend leaves nothing behind when a writer dies")
    backend = harness.backend
    backend.put(kind, hexname(12), b"complete")
    harness.leave_interrupted_write(kind, hexname(13), b"torn")
    harness.leave_interrupted_write(kind, hexname(12), b"torn rewrite")
    assert [info.name for info in backend.list(kind)] == [hexname(12)]
    assert backend.get(kind, hexname(12)) == b"complete"
    with pytest.raises(ObjectNotFound):
        backend.get(kind, hexname(13))


# --- delete ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_delete_removes_and_is_idempotent(backend: Backend, kind: Kind) -> None:
    name = "config" if kind is Kind.CONFIG else hexname(14)
    backend.delete(kind, name)  # never existed: not an error
    backend.put(kind, name, b"x")
    backend.delete(kind, name)
    with pytest.raises(ObjectNotFound):
        backend.get(kind, name)
    assert name not in [info.name for info in backend.list(kind)]
    backend.delete(kind, name)  # again: still not an error


# --- exists / create -----------------------------------------------------------------------------


def test_exists_only_once_a_config_is_stored(fresh_harness: Harness) -> None:
    backend = fresh_harness.backend
    assert backend.exists() is False
    backend.create()
    assert backend.exists() is False  # created, but not a repository yet
    backend.put(Kind.KEYS, hexname(15), b"key")
    assert backend.exists() is False
    backend.put(Kind.CONFIG, "config", b"{}")
    assert backend.exists() is True
    backend.delete(Kind.CONFIG, "config")
    assert backend.exists() is False


def test_create_prepares_an_empty_store(backend: Backend) -> None:
    for kind in Kind:
        assert list(backend.list(kind)) == []
    backend.put(Kind.DATA, hexname(16), b"x")
    assert backend.get(Kind.DATA, hexname(16)) == b"x"


def test_create_fails_when_a_repository_exists(backend: Backend) -> None:
    backend.put(Kind.CONFIG, "config", b"{}")
    with pytest.raises(ObjectExists):
        backend.create()


# --- threads ----------------------------------------------------------------------------------------


def test_concurrent_puts_of_different_objects(backend: Backend) -> None:
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)

    def writer(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            n = t * per_thread + i
            backend.put(Kind.DATA, hexname(n), n.to_bytes(4, "big") * (n + 1))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(writer, range(threads)))
    listed = {info.name: info.size for info in backend.list(Kind.DATA)}
    assert listed == {hexname(n): 4 * (n + 1) for n in range(threads * per_thread)}
    for n in range(threads * per_thread):
        assert backend.get(Kind.DATA, hexname(n)) == n.to_bytes(4, "big") * (n + 1)


def test_concurrent_exclusive_puts_of_one_name_have_exactly_one_winner(backend: Backend) -> None:
    threads, rounds = 8, 10
    for r in range(rounds):
        barrier = threading.Barrier(threads)
        name = hexname(5000 + r)

        def contender(t: int) -> bool:
            barrier.wait()
            try:
                backend.put(Kind.LOCKS, name, f"holder {t}".encode() * 1000, exclusive=True)
                return True
            except ObjectExists:
                return False

        with ThreadPoolExecutor(threads) as pool:
            won = list(pool.map(contender, range(threads)))
        assert won.count(True) == 1, f"round {r}: winners {won}"
        assert backend.get(Kind.LOCKS, name) == f"holder {won.index(True)}".encode() * 1000


def test_concurrent_overwrites_never_expose_a_torn_object(backend: Backend) -> None:
    # Readers see one whole version or another, never a mix (atomic put).
    versions = [bytes([v]) * 200_000 for v in range(1, 5)]
    backend.put(Kind.LOCKS, hexname(17), versions[0])
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            data = backend.get(Kind.LOCKS, hexname(17))
            assert data in versions
            seen.add(data[:1])

    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(reader) for _ in range(2)]
        for _ in range(10):
            for version in versions:
                backend.put(Kind.LOCKS, hexname(17), version)
        stop.set()
        for future in readers:
            future.result()
    assert seen  # the readers did read


def test_put_of_parts_stores_their_concatenation(backend: Backend) -> None:
    # Packs are handed over as parts so that no joined copy is held in memory.
    parts = [b"first-", bytearray(b"second-"), memoryview(b"third")]
    backend.put(Kind.DATA, "ab" + "c" * 62, parts)
    assert backend.get(Kind.DATA, "ab" + "c" * 62) == b"first-second-third"
    assert backend.stat(Kind.DATA, "ab" + "c" * 62).size == 18
