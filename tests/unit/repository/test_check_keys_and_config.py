"""Damage to key files and the config is named, by check and by open (found by the damage
campaign of tests/faults: check never looked at them, and open blamed the password)."""

from __future__ import annotations

import json

import pytest

from safehold import errors
from safehold.repository import Repository
from safehold.repository.backends import Kind
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.check import check

PASSWORD = b"pw"
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


@pytest.fixture
def memory_repository() -> Repository:
    return Repository.init(MemoryBackend(), PASSWORD, FAST_KDF)


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


def test_check_names_a_damaged_key_file_nobody_opened(memory_repository):
    other = memory_repository.add_key(b"another password", FAST_KDF)
    backend = memory_repository.backend
    backend.put(Kind.KEYS, other, flip(backend.get(Kind.KEYS, other), 200))
    report = check(Repository.open(backend, PASSWORD))
    assert not report.ok
    assert report.errors == [f"key {other[:8]}: its content does not match its name (damaged)"]


def test_open_names_the_damaged_key_instead_of_blaming_the_password(memory_repository):
    backend = memory_repository.backend
    name = memory_repository.key_name
    backend.put(Kind.KEYS, name, flip(backend.get(Kind.KEYS, name), len(backend.get(Kind.KEYS, name)) - 30))
    with pytest.raises(errors.KeyFileInvalid) as caught:
        Repository.open(backend, PASSWORD)
    assert name[:8] in caught.value.message and "damaged" in caught.value.message


def test_a_wrong_password_is_still_called_one(memory_repository):
    with pytest.raises(errors.WrongPassword):
        Repository.open(memory_repository.backend, b"not the password")
    assert check(Repository.open(memory_repository.backend, PASSWORD)).ok


@pytest.mark.parametrize("field", ["id", "key_check"])
def test_open_names_a_damaged_config(memory_repository, field):
    backend = memory_repository.backend
    config = json.loads(backend.get(Kind.CONFIG, "config"))
    config[field] = config[field][:-1] + ("0" if config[field][-1] != "0" else "1")
    backend.put(Kind.CONFIG, "config", json.dumps(config).encode())
    with pytest.raises(errors.IntegrityError) as caught:
        Repository.open(backend, PASSWORD)
    assert "config" in caught.value.message


def test_check_names_a_config_created_after_its_keys(memory_repository):
    backend = memory_repository.backend
    config = json.loads(backend.get(Kind.CONFIG, "config"))
    config["created"] = "2099" + config["created"][4:]
    backend.put(Kind.CONFIG, "config", json.dumps(config).encode())
    report = check(Repository.open(backend, PASSWORD))
    assert [e for e in report.errors if e.startswith("config: created")], report.errors
