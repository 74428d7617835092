"""Key files: bounded KDF parameters, parameters authenticated (version 2), version 1 still read,
and opening a repository with many key files costs a bounded number of derivations."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, crypto
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.crypto import (
    KDF_LIMITS,
    DecryptionFailed,
    KeyFileRejected,
    MasterKey,
    unwrap_master_key,
    wrap_master_key,
)

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
KEY = MasterKey.generate()
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "repository-v1"


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every password derivation, recorded (and still performed)."""
    calls: list[dict] = []
    real = crypto._derive

    def counting(password: bytes, salt: bytes, kdf: dict) -> bytes:
        calls.append(dict(kdf))
        return real(password, salt, kdf)

    monkeypatch.setattr(crypto, "_derive", counting)
    return calls


def tampered(key_file: bytes, **kdf: object) -> bytes:
    document = json.loads(key_file)
    document["kdf"].update(kdf)
    return json.dumps(document).encode()


# --- bounds, checked before any derivation ------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"memory_kib": 64 * 1024 * 1024}, "memory_kib"),
        ({"iterations": 10**9}, "iterations"),
        ({"lanes": 0}, "lanes"),
        ({"memory_kib": -1}, "memory_kib"),
        ({"iterations": "4"}, "iterations"),
        ({"memory_kib": True}, "memory_kib"),
        ({"name": "pbkdf1"}, "pbkdf1"),
    ],
)
def test_absurd_parameters_are_refused_before_deriving(change: dict, needle: str, derivations: list) -> None:
    for version_1 in (False, True):
        key_file = tampered(wrap_master_key(KEY, b"pw", FAST_KDF), **change)
        derivations.clear()
        if version_1:
            document = json.loads(key_file)
            document["version"] = 1
            key_file = json.dumps(document).encode()
        with pytest.raises(KeyFileRejected, match=needle):
            unwrap_master_key(key_file, b"pw")
        assert derivations == []


def test_scrypt_bounds() -> None:
    key_file = wrap_master_key(KEY, b"pw", {"name": "scrypt", "n": 1024, "r": 8, "p": 1})
    assert unwrap_master_key(key_file, b"pw") == KEY
    for change in ({"n": 1000}, {"n": 2**30}, {"r": 10**6}, {"p": 10**6}):
        with pytest.raises(KeyFileRejected):
            unwrap_master_key(tampered(key_file, **change), b"pw")


def test_writing_out_of_bounds_parameters_is_refused() -> None:
    with pytest.raises(KeyFileRejected, match="memory_kib"):
        wrap_master_key(KEY, b"pw", {**FAST_KDF, "memory_kib": KDF_LIMITS["argon2id"]["memory_kib"][1] + 1})


def test_not_json_or_missing_fields_is_rejected() -> None:
    for bad in (b"\xff", b"[]", b"{}", json.dumps({"version": 2, "kdf": FAST_KDF}).encode()):
        with pytest.raises(KeyFileRejected):
            unwrap_master_key(bad, b"pw")


# --- authenticated parameters ----------------------------------------------------------


def test_new_key_files_are_version_2() -> None:
    document = json.loads(wrap_master_key(KEY, b"pw", FAST_KDF))
    assert document["version"] == 2


def test_tampered_parameters_fail_to_unwrap_even_when_the_key_would_not_change(monkeypatch) -> None:
    """The wrapping key depends on the parameters anyway; the AAD also covers fields that do not
    feed the derivation, so no field of a version 2 key file can change unnoticed."""
    key_file = wrap_master_key(KEY, b"pw", FAST_KDF)
    document = json.loads(key_file)
    document["kdf"]["note"] = "x"  # ignored by the derivation
    with pytest.raises(DecryptionFailed):
        unwrap_master_key(json.dumps(document).encode(), b"pw")
    document = json.loads(key_file)
    document["salt"] = base64.b64encode(b"\0" * 16).decode()
    with pytest.raises(DecryptionFailed):
        unwrap_master_key(json.dumps(document).encode(), b"pw")


def test_a_version_2_file_relabelled_version_1_does_not_open() -> None:
    document = json.loads(wrap_master_key(KEY, b"pw", FAST_KDF))
    document["version"] = 1
    with pytest.raises(DecryptionFailed):
        unwrap_master_key(json.dumps(document).encode(), b"pw")


def test_the_version_1_fixture_still_opens(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE / "repo", tmp_path / "repo")
    expected = json.loads((FIXTURE / "expected.json").read_text())
    (key_name,) = [p.name for p in (tmp_path / "repo" / "keys").iterdir()]
    assert json.loads((tmp_path / "repo" / "keys" / key_name).read_text())["version"] == 1
    repository = Repository.open(LocalBackend(tmp_path / "repo"), expected["password"].encode())
    assert repository.key_name == key_name
    # A key added now is written in the new form, and both open.
    new_key = repository.add_key(b"another password", FAST_KDF)
    assert json.loads(repository.backend.get(Kind.KEYS, new_key))["version"] == 2
    assert Repository.open(LocalBackend(tmp_path / "repo"), b"another password").key_name == new_key
    versions = {k["id"]: k["version"] for k in repository.list_keys()}
    assert versions == {key_name: 1, new_key: 2}


# --- many key files ----------------------------------------------------------------------


def repository_with_keys(count: int) -> tuple[MemoryBackend, list[str]]:
    backend = MemoryBackend()
    repository = Repository.init(backend, b"password-0", FAST_KDF)
    names = [repository.key_name]
    for number in range(1, count):
        time.sleep(0.001)
        names.append(repository.add_key(f"password-{number}".encode(), FAST_KDF))
    return backend, names


def test_open_tries_at_most_the_bound_and_says_to_pass_a_key_id(derivations: list) -> None:
    backend, names = repository_with_keys(Repository.MAX_KEY_ATTEMPTS + 4)
    derivations.clear()
    with pytest.raises(errors.TooManyKeys) as caught:
        Repository.open(backend, b"no such password")
    assert len(derivations) == Repository.MAX_KEY_ATTEMPTS
    assert caught.value.exit_code == 13
    assert "--key-id" in caught.value.hint
    assert f"{Repository.MAX_KEY_ATTEMPTS} of the {len(names)}" in caught.value.message


def test_key_id_costs_one_derivation(derivations: list) -> None:
    backend, names = repository_with_keys(Repository.MAX_KEY_ATTEMPTS + 4)
    oldest = names[0]
    derivations.clear()
    repository = Repository.open(backend, b"password-0", key_id=oldest[:8])
    assert repository.key_name == oldest and len(derivations) == 1
    derivations.clear()
    with pytest.raises(errors.WrongPassword):
        Repository.open(backend, b"password-1", key_id=oldest[:8])
    assert len(derivations) == 1
    with pytest.raises(errors.KeyNotFound):
        Repository.open(backend, b"password-0", key_id="ffffffffffff")


def test_preferred_key_is_tried_first(derivations: list) -> None:
    backend, names = repository_with_keys(Repository.MAX_KEY_ATTEMPTS + 4)
    derivations.clear()
    repository = Repository.open(backend, b"password-0", preferred=[names[0]])
    assert repository.key_name == names[0] and len(derivations) == 1


def test_a_few_keys_all_tried_and_a_rejected_one_reported(derivations: list) -> None:
    backend, names = repository_with_keys(3)
    backend.put(Kind.KEYS, names[1], tampered(backend.get(Kind.KEYS, names[1]), iterations=10**9))
    derivations.clear()
    # The other keys still open ...
    assert Repository.open(backend, b"password-2").key_name == names[2]
    # ... and when none does, the rejected key file is named with the bound it breaks.
    derivations.clear()
    with pytest.raises(errors.KeyFileInvalid) as caught:
        Repository.open(backend, b"password-1")
    assert len(derivations) == 2
    assert names[1][:8] in caught.value.message and "iterations" in caught.value.message
    assert caught.value.exit_code == 26
