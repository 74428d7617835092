"""The archiver fixes glibc's mmap threshold, so the buffers of a backup (chunks, zstd frames,
ciphertexts of 0.25-4 MiB) are returned to the system when freed instead of staying in the heap
and the per-thread arenas (issue 19, fifth round: a full backup's peak RSS)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from safehold.repository import archiver

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                reason="glibc's malloc only")

# In a fresh interpreter (the setting is process-wide): free one large buffer, which makes glibc
# raise its threshold past 1 MiB, then see whether a 1 MiB buffer is mmapped (hblkhd grows) or
# comes from the heap.
PROBE = textwrap.dedent("""
    import ctypes, os, sys
    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    big = os.urandom(8 << 20)
    del big
    if sys.argv[1] == "fixed":
        from safehold.repository.archiver import fixed_mmap_threshold
        fixed_mmap_threshold()
    before = libc.mallinfo2().hblkhd
    chunk = os.urandom(1 << 20)
    print(libc.mallinfo2().hblkhd - before)
""")


def mapped_for_a_chunk(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_chunk_buffer_is_mapped_once_the_threshold_is_fixed() -> None:
    assert mapped_for_a_chunk("default") == 0  # glibc's dynamic threshold: from the heap, kept there
    assert mapped_for_a_chunk("fixed") >= 1 << 20  # mapped, so unmapped when freed


def test_snapshot_fixes_the_threshold(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls = []
    monkeypatch.setattr(archiver, "fixed_mmap_threshold", lambda: calls.append(1))
    from safehold.items import View
    from safehold.repository import Repository
    from safehold.repository.backends.memory import MemoryBackend

    repository = Repository.init(MemoryBackend(), b"password", {"name": "argon2id", "memory_kib": 64,
                                                                 "iterations": 1, "lanes": 1})
    view = View(kind="files", paths=["/"], items=lambda: iter(()))
    archiver.Archiver(repository, threads=1).snapshot(view, "t", None)
    assert calls == [1]
