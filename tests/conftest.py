"""Fixtures shared across the test suites. Keep this small: helpers that only one
suite needs live in that suite's modules."""

from __future__ import annotations

import pytest

# A key derivation that costs microseconds: the real Argon2id parameters take
# ~0.15 s per key, which adds up over a few hundred repository tests.
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"correct horse battery staple"


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Make every key file written during the test use a cheap KDF (the default one too)."""
    from safehold.repository import crypto

    monkeypatch.setattr(crypto, "DEFAULT_KDF", dict(FAST_KDF))
    return dict(FAST_KDF)


@pytest.fixture
def memory_repository(fast_kdf: dict):
    """A freshly initialised repository on an in-memory backend, password ``PASSWORD``."""
    from safehold.repository import Repository
    from safehold.repository.backends.memory import MemoryBackend

    return Repository.init(MemoryBackend(), PASSWORD, fast_kdf)
