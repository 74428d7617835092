"""Master keys, key files, keyed ids and authenticated encryption."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.repository.crypto import (
    CIPHER_VERSION,
    DEFAULT_KDF,
    NONCE_SIZE,
    OVERHEAD,
    Cipher,
    DecryptionFailed,
    KeyFileRejected,
    MasterKey,
    describe_key_file,
    unwrap_master_key,
    wrap_master_key,
)

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
SCRYPT_KDF = {"name": "scrypt", "n": 1024, "r": 8, "p": 1}
KEY = MasterKey.generate()
CIPHER = Cipher(KEY)


# --- master key and key files -----------------------------------------------------


def test_generated_keys_are_random_and_the_seed_fits_62_bits() -> None:
    keys = [MasterKey.generate() for _ in range(20)]
    assert len({k.encryption_key for k in keys}) == 20
    assert len({k.id_key for k in keys}) == 20
    assert all(len(k.encryption_key) == 32 and len(k.id_key) == 32 for k in keys)
    assert all(0 <= k.chunker_seed < 2**62 for k in keys)
    assert MasterKey.from_bytes(keys[0].to_bytes()) == keys[0]


@pytest.mark.parametrize("kdf", [None, FAST_KDF, SCRYPT_KDF], ids=["default-argon2id", "argon2id", "scrypt"])
def test_wrap_unwrap_round_trip(kdf: dict | None) -> None:
    key_file = wrap_master_key(KEY, b"secret", kdf)
    assert unwrap_master_key(key_file, b"secret") == KEY
    document = json.loads(key_file)
    assert document["kdf"] == (kdf or DEFAULT_KDF)
    assert describe_key_file(key_file)["kdf"] == (kdf or DEFAULT_KDF)["name"]


def test_wrong_password_raises_decryption_failed() -> None:
    key_file = wrap_master_key(KEY, b"secret", FAST_KDF)
    for wrong in (b"Secret", b"secret ", b"", b"secret" * 100):
        with pytest.raises(DecryptionFailed):
            unwrap_master_key(key_file, wrong)


def test_key_file_does_not_contain_the_master_key_or_password() -> None:
    key_file = wrap_master_key(KEY, b"hunter2-password", FAST_KDF)
    for secret in (KEY.encryption_key, KEY.id_key):
        assert secret not in key_file
        assert base64.b64encode(secret) not in key_file
    assert b"hunter2-password" not in key_file


def test_two_key_files_for_one_password_differ_but_open_the_same_key() -> None:
    # Fresh salt and nonce per key file.
    first, second = (wrap_master_key(KEY, b"pw", FAST_KDF) for _ in range(2))
    assert json.loads(first)["salt"] != json.loads(second)["salt"]
    assert json.loads(first)["data"] != json.loads(second)["data"]
    assert unwrap_master_key(first, b"pw") == unwrap_master_key(second, b"pw") == KEY


def test_tampered_key_file_fails() -> None:
    document = json.loads(wrap_master_key(KEY, b"pw", FAST_KDF))
    data = bytearray(base64.b64decode(document["data"]))
    data[-1] ^= 1
    document["data"] = base64.b64encode(bytes(data)).decode()
    with pytest.raises(DecryptionFailed):
        unwrap_master_key(json.dumps(document).encode(), b"pw")


def test_key_file_of_another_version_is_refused() -> None:
    document = json.loads(wrap_master_key(KEY, b"pw", FAST_KDF))
    document["version"] = 3
    with pytest.raises(KeyFileRejected, match="version"):
        unwrap_master_key(json.dumps(document).encode(), b"pw")


def test_unknown_kdf_is_refused() -> None:
    document = json.loads(wrap_master_key(KEY, b"pw", FAST_KDF))
    document["kdf"] = {"name": "md5"}
    with pytest.raises(KeyFileRejected, match="md5"):
        unwrap_master_key(json.dumps(document).encode(), b"pw")


def test_master_key_repr_and_str_hide_the_secrets() -> None:
    for text in (repr(KEY), str(KEY), f"{KEY}", repr([KEY]), repr({"k": KEY})):
        assert KEY.encryption_key.hex() not in text
        assert KEY.id_key.hex() not in text
        assert repr(KEY.encryption_key) not in text
        assert repr(KEY.id_key) not in text
        assert str(KEY.chunker_seed) not in text


# --- ids ---------------------------------------------------------------------------------


def test_keyed_ids_differ_from_plain_hashes_and_between_repositories() -> None:
    import blake3

    data = b"the same content in two repositories"
    other = Cipher(MasterKey.generate())
    assert len(CIPHER.blob_id(data)) == 32
    assert CIPHER.blob_id(data) == CIPHER.blob_id(memoryview(data))  # deterministic
    assert CIPHER.blob_id(data) != blake3.blake3(data).digest()
    assert CIPHER.blob_id(data) != other.blob_id(data)
    assert CIPHER.blob_id(data) != CIPHER.blob_id(data + b"\0")


# --- encryption -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=4096), associated=st.binary(max_size=64))
def test_encrypt_decrypt_round_trip(plaintext: bytes, associated: bytes) -> None:
    sealed = CIPHER.encrypt(plaintext, associated)
    assert len(sealed) == len(plaintext) + OVERHEAD
    assert sealed[0] == CIPHER_VERSION
    assert CIPHER.decrypt(sealed, associated) == plaintext
    assert CIPHER.decrypt(memoryview(sealed), associated) == plaintext


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=512), associated=st.binary(max_size=32), data=st.data())
def test_any_flipped_bit_or_other_associated_data_fails(plaintext: bytes, associated: bytes, data) -> None:
    sealed = bytearray(CIPHER.encrypt(plaintext, associated))
    position = data.draw(st.integers(0, len(sealed) - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    sealed[position] ^= 1 << bit
    with pytest.raises(DecryptionFailed):
        CIPHER.decrypt(bytes(sealed), associated)
    sealed[position] ^= 1 << bit
    other = data.draw(st.binary(max_size=32).filter(lambda a: a != associated), label="other associated data")
    with pytest.raises(DecryptionFailed):
        CIPHER.decrypt(bytes(sealed), other)


def test_nonces_are_fresh_for_each_encryption() -> None:
    nonces = {CIPHER.encrypt(b"same", b"ad")[1 : 1 + NONCE_SIZE] for _ in range(200)}
    assert len(nonces) == 200


def test_another_key_cannot_decrypt() -> None:
    sealed = CIPHER.encrypt(b"private", b"ad")
    with pytest.raises(DecryptionFailed):
        Cipher(MasterKey.generate()).decrypt(sealed, b"ad")


@pytest.mark.parametrize("cut", [0, 1, OVERHEAD - 1])
def test_truncated_ciphertext_fails(cut: int) -> None:
    sealed = CIPHER.encrypt(b"", b"ad")
    with pytest.raises(DecryptionFailed):
        CIPHER.decrypt(sealed[:cut], b"ad")


def test_unknown_cipher_version_fails() -> None:
    sealed = bytearray(CIPHER.encrypt(b"data", b"ad"))
    sealed[0] = 2
    with pytest.raises(DecryptionFailed, match="version"):
        CIPHER.decrypt(bytes(sealed), b"ad")


def test_key_derivation_is_cached_per_process_and_changes_no_result():
    """issue 19: a process opening repositories again derives each wrapping key once; the cache
    holds neither the password nor a hash of it, and a wrong password or another salt is derived
    (and refused) as before."""
    from safehold.repository import crypto

    kdf = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
    master = crypto.MasterKey.generate()
    key_file = crypto.wrap_master_key(master, b"right", kdf)
    crypto._DERIVED.clear()
    assert crypto.unwrap_master_key(key_file, b"right").to_bytes() == master.to_bytes()
    assert len(crypto._DERIVED) == 1
    assert crypto.unwrap_master_key(key_file, b"right").to_bytes() == master.to_bytes()
    assert len(crypto._DERIVED) == 1  # the second open derived nothing
    assert all(b"right" not in entry and b"right" not in value for entry, value in crypto._DERIVED.items())
    with pytest.raises(crypto.DecryptionFailed):
        crypto.unwrap_master_key(key_file, b"wrong")
    assert len(crypto._DERIVED) == 2
    salt = bytes(16)
    assert crypto._derive(b"right", salt, kdf) == crypto._derive_uncached(b"right", salt, kdf)
    assert crypto._derive(b"right", salt, dict(kdf, iterations=2)) == crypto._derive_uncached(b"right", salt, dict(kdf, iterations=2))
    for number in range(crypto._DERIVED_LIMIT + 4):
        crypto._derive(b"p%d" % number, salt, kdf)
    assert len(crypto._DERIVED) == crypto._DERIVED_LIMIT


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000))
def test_encrypt_buffer_makes_what_encrypt_makes(plaintext: bytes) -> None:
    """The one-buffer form (a stored blob's) has encrypt's layout: version, a fresh nonce, the
    ciphertext and tag; it decrypts alike and fails alike when the associated data differs."""
    made = CIPHER.encrypt_buffer(plaintext, b"aad")
    assert len(made) == len(CIPHER.encrypt(plaintext, b"aad"))
    assert CIPHER.decrypt(made, b"aad") == plaintext
    assert CIPHER.decrypt(bytes(made), b"aad") == plaintext
    with pytest.raises(DecryptionFailed):
        CIPHER.decrypt(made, b"other")
    assert made[1:13] != CIPHER.encrypt_buffer(plaintext, b"aad")[1:13]  # a fresh nonce each time
