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
Argon2id; any number of key files may coexist (one per password). Their
parameters are bounded before any derivation and, from key file version 2,
authenticated as associated data of the wrapped key.

Nonces: a fresh 96-bit random nonce per encryption (``os.urandom``). With
random nonces AES-GCM stays safe up to about 2^32 encryptions per key, i.e.
about 4 PiB of 1 MiB chunks; the associated data binds each ciphertext to its
type and id, so a blob cannot be swapped for another without detection.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

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

    def encrypt_buffer(self, plaintext: bytes | memoryview, associated: bytes) -> bytes | bytearray:
        """What ``encrypt`` returns, made in one buffer (a bytearray): the version and nonce are
        written in front of the ciphertext as it is made, instead of copying it behind them; one
        allocation and copy of each stored blob fewer (issue 19, fifth round). ``bytes`` from a
        ``cryptography`` without ``encrypt_into`` (before 45)."""
        into = getattr(self._aead, "encrypt_into", None)
        if into is None:
            return self.encrypt(plaintext, associated)
        nonce = os.urandom(NONCE_SIZE)
        out = bytearray(OVERHEAD + len(plaintext))
        out[0] = CIPHER_VERSION
        out[1 : 1 + NONCE_SIZE] = nonce
        into(nonce, plaintext, associated, memoryview(out)[1 + NONCE_SIZE :])
        return out

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
KEY_FILE_VERSION = 2
READABLE_KEY_FILE_VERSIONS = (1, 2)
_KEY_AAD_V1 = b"safehold-key-v1"
_KEY_AAD_V2 = b"safehold-key-v2\x00"

# Bounds on the parameters a key file may ask for, checked when it is read and
# before anything is derived: a key file is plain JSON in the backend, so
# whoever can write there could otherwise make every open hang (memory_kib in
# the terabytes) or fail deep inside a library ("this is a bug"). The upper
# bounds allow 32 times the default's memory and a few seconds per
# derivation; the lower ones are what the algorithms themselves require (no
# minimum strength is imposed: a weak key file hurts only its own password).
# Each entry: (lowest, highest); "cost" bounds the product memory x passes.
KDF_LIMITS: dict[str, dict[str, tuple[int, int]]] = {
    "argon2id": {
        "memory_kib": (8, 1024 * 1024),  # 1 GiB; Argon2 needs at least 8 KiB per lane
        "iterations": (1, 16),
        "lanes": (1, 16),
        "cost": (1, 4 * 1024 * 1024),  # memory_kib x iterations: 1 GiB x 4 passes, or 256 MiB x 16
    },
    "scrypt": {
        "n": (2, 2**20),  # a power of two; 128 * n * r bytes of memory
        "r": (1, 32),
        "p": (1, 16),
        "cost": (1, 1024 * 1024 * 1024),  # 128 * n * r bytes: at most 1 GiB of memory
    },
}
MAX_KEY_FILE_BYTES = 64 * 1024
_SALT_SIZES = (16, 64)
_MAX_WRAPPED_BYTES = 1024  # nonce, msgpack of the master key (about 90 bytes), tag


class KeyFileRejected(ValueError):
    """A key file that is malformed or asks for key derivation parameters out of bounds."""


@dataclass(frozen=True)
class KeyFile:
    """A parsed key file whose fields were checked; nothing was derived yet."""

    version: int
    kdf: dict
    salt: bytes
    wrapped: bytes
    created: str | None
    hostname: str | None
    username: str | None


def check_kdf(kdf: object) -> dict:
    """Return ``kdf`` when its algorithm is known and every parameter is an integer within
    :data:`KDF_LIMITS`; raise :class:`KeyFileRejected` naming the parameter and bound otherwise."""
    if not isinstance(kdf, dict) or not isinstance(kdf.get("name"), str):
        raise KeyFileRejected("'kdf' is not a mapping with a 'name'")
    name = kdf["name"]
    limits = KDF_LIMITS.get(name)
    if limits is None:
        raise KeyFileRejected(f"unknown key derivation function {name!r} (known: {', '.join(KDF_LIMITS)})")
    values: dict[str, int] = {}
    for parameter, (low, high) in limits.items():
        if parameter == "cost":
            continue
        value = kdf.get(parameter)
        if type(value) is not int:  # bool is an int subclass: refused too
            raise KeyFileRejected(f"kdf.{parameter} is {value!r}, not an integer")
        if not low <= value <= high:
            raise KeyFileRejected(f"kdf.{parameter} = {value} is out of bounds ({low} to {high})")
        values[parameter] = value
    if name == "argon2id":
        if values["memory_kib"] < 8 * values["lanes"]:
            raise KeyFileRejected(f"kdf.memory_kib = {values['memory_kib']} is below 8 x lanes ({values['lanes']})")
        cost, what = values["memory_kib"] * values["iterations"], "memory_kib x iterations"
    else:
        if values["n"] & (values["n"] - 1):
            raise KeyFileRejected(f"kdf.n = {values['n']} is not a power of two")
        cost, what = 128 * values["n"] * values["r"], "scrypt memory (128 x n x r bytes)"
    if cost > limits["cost"][1]:
        raise KeyFileRejected(f"{what} = {cost} is out of bounds (at most {limits['cost'][1]})")
    return kdf


def parse_key_file(key_file: bytes) -> KeyFile:
    """Parse and check a key file without deriving anything (cheap: safe on every key of a repository)."""
    if len(key_file) > MAX_KEY_FILE_BYTES:
        raise KeyFileRejected(f"{len(key_file)} bytes, more than a key file's {MAX_KEY_FILE_BYTES}")
    try:
        document = json.loads(key_file)
    except (ValueError, RecursionError):
        raise KeyFileRejected("not JSON") from None
    if not isinstance(document, dict):
        raise KeyFileRejected("not a JSON object")
    version = document.get("version")
    if version not in READABLE_KEY_FILE_VERSIONS or type(version) is not int:
        raise KeyFileRejected(
            f"unsupported key file version {version!r} (this safehold reads {READABLE_KEY_FILE_VERSIONS})"
        )
    kdf = check_kdf(document.get("kdf"))
    try:
        salt = base64.b64decode(document["salt"], validate=True)
        wrapped = base64.b64decode(document["data"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise KeyFileRejected("'salt' or 'data' is missing or not base64") from None
    if not _SALT_SIZES[0] <= len(salt) <= _SALT_SIZES[1]:
        raise KeyFileRejected(f"salt of {len(salt)} bytes (expected {_SALT_SIZES[0]} to {_SALT_SIZES[1]})")
    if not NONCE_SIZE + TAG_SIZE < len(wrapped) <= _MAX_WRAPPED_BYTES:
        raise KeyFileRejected(f"wrapped key of {len(wrapped)} bytes")
    text = {field: document.get(field) if isinstance(document.get(field), str) else None
            for field in ("created", "hostname", "username")}
    return KeyFile(version, kdf, salt, wrapped, **text)


def _associated_data(version: int, kdf: dict, salt: bytes) -> bytes:
    """What the wrapped master key's AEAD authenticates besides the ciphertext.

    Version 2 binds the whole parameter set (canonical JSON of version, kdf and
    salt), so any edit of them, even of a field the derivation ignores, fails
    authentication. The derivation already depends on them, so this is mostly
    about the format describing itself honestly; the real protection against
    hostile parameters is the bounds above, checked before deriving. Version 1
    files (salt and kdf not authenticated) are still read with their old
    constant; relabelling a version 2 file as version 1 changes its associated
    data, so it no longer opens.
    """
    if version == 1:
        return _KEY_AAD_V1
    canonical = json.dumps(
        {"version": version, "kdf": kdf, "salt": base64.b64encode(salt).decode()},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )
    return _KEY_AAD_V2 + canonical.encode()


# Derived wrapping keys, kept for the life of the process: the key derivation is deliberately
# slow (Argon2id, ~0.3 s of CPU), and a process that opens repositories again and again (the
# server's and the scheduler's jobs, 'restore --all', 'copy' between two repositories) derives
# the same key from the same inputs each time. The derivation is a pure function of
# (kdf parameters, salt, password), so the cache changes no result: a wrong password, another
# salt or any other parameter is a different entry and is derived (and fails) as before. Entries
# are keyed by an HMAC under a random per-process key, so the cache holds no password and no
# offline-testable hash of one; the values are as secret as the master keys this process already
# holds after unwrapping. Bounded, oldest out first.
_DERIVED: dict[bytes, bytes] = {}
_DERIVED_LIMIT = 16
_DERIVED_SECRET = os.urandom(32)
_DERIVED_LOCK = threading.Lock()


def _derive(password: bytes, salt: bytes, kdf: dict) -> bytes:
    parameters = json.dumps(kdf, sort_keys=True, separators=(",", ":")).encode()
    entry = hmac.new(_DERIVED_SECRET, b"%d:%s%d:%s" % (len(parameters), parameters, len(salt), salt) + password,
                     hashlib.sha256).digest()
    with _DERIVED_LOCK:
        known = _DERIVED.get(entry)
    if known is not None:
        return known
    derived = _derive_uncached(password, salt, kdf)
    remember_derived(entry, derived)
    listener = _DERIVED_LISTENER
    if listener is not None:
        listener(entry, derived)
    return derived


# The command server (command_server/zygote.py) shares derivations between the processes it forks:
# a command's process hands each new entry to the listener, which sends it to the zygote; the
# zygote remembers it (its children inherit it) and forgets all after an idle time. An entry is
# only an HMAC under this process tree's random key and the derived key, never the password.
_DERIVED_LISTENER: Callable[[bytes, bytes], None] | None = None


def on_new_derived(listener: Callable[[bytes, bytes], None] | None) -> None:
    """Call ``listener(entry, derived)`` after each derivation this process makes (None: stop)."""
    global _DERIVED_LISTENER
    _DERIVED_LISTENER = listener


def remember_derived(entry: bytes, derived: bytes) -> None:
    with _DERIVED_LOCK:
        _DERIVED[entry] = derived
        while len(_DERIVED) > _DERIVED_LIMIT:
            del _DERIVED[next(iter(_DERIVED))]


def forget_derived() -> int:
    """Drop every cached derivation; return how many there were."""
    with _DERIVED_LOCK:
        count = len(_DERIVED)
        _DERIVED.clear()
    return count


def derived_count() -> int:
    with _DERIVED_LOCK:
        return len(_DERIVED)


def _derive_uncached(password: bytes, salt: bytes, kdf: dict) -> bytes:
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
    """Return the bytes of a key file (version 2) holding ``master`` wrapped by ``password``."""
    kdf = check_kdf(dict(kdf or DEFAULT_KDF))
    salt = os.urandom(16)
    wrapping = AESGCM(_derive(password, salt, kdf))
    nonce = os.urandom(NONCE_SIZE)
    associated = _associated_data(KEY_FILE_VERSION, kdf, salt)
    document = {
        "version": KEY_FILE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "username": _username(),
        "kdf": kdf,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(nonce + wrapping.encrypt(nonce, master.to_bytes(), associated)).decode(),
    }
    return json.dumps(document, indent=1).encode()


def unwrap_master_key(key_file: bytes | KeyFile, password: bytes) -> MasterKey:
    """Raise :class:`KeyFileRejected` (before deriving) when the key file is malformed or out of
    bounds, :class:`DecryptionFailed` when ``password`` does not open it."""
    parsed = key_file if isinstance(key_file, KeyFile) else parse_key_file(key_file)
    wrapping = AESGCM(_derive(password, parsed.salt, parsed.kdf))
    blob = parsed.wrapped
    try:
        plain = wrapping.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:],
                                 _associated_data(parsed.version, parsed.kdf, parsed.salt))
    except InvalidTag:
        raise DecryptionFailed("wrong password") from None
    return MasterKey.from_bytes(plain)


def describe_key_file(key_file: bytes) -> dict:
    """What ``key list`` shows; a rejected key file is listed with the reason, not hidden."""
    try:
        parsed = parse_key_file(key_file)
    except KeyFileRejected as exc:
        return {"created": None, "hostname": None, "username": None, "kdf": None, "version": None,
                "invalid": str(exc)}
    return {"created": parsed.created, "hostname": parsed.hostname, "username": parsed.username,
            "kdf": parsed.kdf["name"], "version": parsed.version}


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a container
        return str(os.getuid())
