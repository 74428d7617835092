"""Keys, blob ids and authenticated encryption.

Master key: random, never derived from a password, so changing or adding a
password never re-encrypts data. It holds three secrets:
- ``encryption_key`` (AES-256-GCM) for every blob and metadata object,
- ``id_key`` for keyed BLAKE3 blob ids, so an id reveals nothing about content
  to someone without the key (plain hashes would let an attacker confirm that
  a known file is in the repository),
- ``chunker_seed`` to perturb FastCDC's gear table, so chunk boundaries do not
  fingerprint known files either.

Key files wrap the master key with a key derived from one password by
Argon2id; any number of key files may coexist (one per password).

Nonces: a fresh 96-bit random nonce per encryption (``os.urandom``). With
random nonces AES-GCM stays safe up to about 2^32 encryptions per key, i.e.
about 4 PiB of 1 MiB chunks; the associated data binds each ciphertext to its
type and id, so a blob cannot be swapped for another without detection.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

import blake3
import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ID_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
CIPHER_VERSION = 1  # first byte of every encrypted object: 1 = AES-256-GCM, 12-byte nonce
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE


class DecryptionFailed(Exception):
    """Authentication failed: wrong key, damaged or tampered data."""


@dataclass(frozen=True)
class MasterKey:
    encryption_key: bytes
    id_key: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> "MasterKey":
        # FastCDC's seed is XORed into 64-bit gear values and shifted left once:
        # keep it to 62 bits so the shift cannot overflow.
        seed = int.from_bytes(os.urandom(8), "big") >> 2
        return cls(os.urandom(32), os.urandom(32), seed)

    def to_bytes(self) -> bytes:
        return msgpack.packb({"enc": self.encryption_key, "id": self.id_key, "cdc": self.chunker_seed})

    @classmethod
    def from_bytes(cls, data: bytes) -> "MasterKey":
        fields = msgpack.unpackb(data)
        return cls(fields["enc"], fields["id"], fields["cdc"])

    def __repr__(self) -> str:  # never print secrets
        return "MasterKey(<secret>)"


class Cipher:
    """Encrypts and decrypts with one master key. Thread-safe (AESGCM is stateless)."""

    def __init__(self, key: MasterKey) -> None:
        self.key = key
        self._aead = AESGCM(key.encryption_key)
        self._id_key = key.id_key

    def blob_id(self, data: bytes | memoryview) -> bytes:
        # blake3's Python binding releases the GIL for large inputs, so this
        # scales across a thread pool.
        return blake3.blake3(data, key=self._id_key, max_threads=1).digest()

    def encrypt(self, plaintext: bytes | memoryview, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return bytes((CIPHER_VERSION,)) + nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, ciphertext: bytes | memoryview, associated: bytes) -> bytes:
        if len(ciphertext) < OVERHEAD or ciphertext[0] != CIPHER_VERSION:
            raise DecryptionFailed("unknown cipher version or truncated object")
        nonce = bytes(ciphertext[1 : 1 + NONCE_SIZE])
        try:  # a view, not a copy: the AEAD reads any buffer
            return self._aead.decrypt(nonce, memoryview(ciphertext)[1 + NONCE_SIZE :], associated)
        except InvalidTag:
            raise DecryptionFailed("authentication failed") from None


# --- key files ----------------------------------------------------------------

# Argon2id with 32 MiB and 4 passes: about 0.13 s here, above OWASP's minimum
# (19 MiB, 2 passes) and as costly to attack as restic's scrypt default (32 MiB).
# RFC 9106's 64 MiB option doubled the peak memory of every command for little
# gain; key files record their parameters, so stronger ones can be chosen later.
DEFAULT_KDF = {"name": "argon2id", "memory_kib": 32768, "iterations": 4, "lanes": 4}
KEY_FILE_VERSION = 1
_KEY_AAD = b"safehold-key-v1"


def _derive(password: bytes, salt: bytes, kdf: dict) -> bytes:
    name = kdf["name"]
    if name == "argon2id":
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        return Argon2id(
            salt=salt, length=32, iterations=kdf["iterations"], lanes=kdf["lanes"], memory_cost=kdf["memory_kib"]
        ).derive(password)
    if name == "scrypt":
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        return Scrypt(salt=salt, length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(password)
    raise DecryptionFailed(f"unknown key derivation function {name!r}")


def wrap_master_key(master: MasterKey, password: bytes, kdf: dict | None = None) -> bytes:
    """Return the bytes of a key file holding ``master`` wrapped by ``password``."""
    kdf = dict(kdf or DEFAULT_KDF)
    salt = os.urandom(16)
    wrapping = AESGCM(_derive(password, salt, kdf))
    nonce = os.urandom(NONCE_SIZE)
    document = {
        "version": KEY_FILE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "username": _username(),
        "kdf": kdf,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(nonce + wrapping.encrypt(nonce, master.to_bytes(), _KEY_AAD)).decode(),
    }
    return json.dumps(document, indent=1).encode()


def unwrap_master_key(key_file: bytes, password: bytes) -> MasterKey:
    """Raise :class:`DecryptionFailed` when ``password`` does not open this key file."""
    document = json.loads(key_file)
    if document.get("version") != KEY_FILE_VERSION:
        raise DecryptionFailed(f"unsupported key file version {document.get('version')!r}")
    salt = base64.b64decode(document["salt"])
    blob = base64.b64decode(document["data"])
    wrapping = AESGCM(_derive(password, salt, document["kdf"]))
    try:
        return MasterKey.from_bytes(wrapping.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], _KEY_AAD))
    except InvalidTag:
        raise DecryptionFailed("wrong password") from None


def describe_key_file(key_file: bytes) -> dict:
    document = json.loads(key_file)
    return {k: document.get(k) for k in ("created", "hostname", "username")} | {"kdf": document["kdf"]["name"]}


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a container
        return str(os.getuid())
