"""Does each C call of the restore's decode release the GIL while it runs? (issue 19, sixth round)

Each call runs once alone, then in a second thread while the main thread spins in Python: when the
call releases the GIL the spinning thread waits at most about a switch interval (5 ms) or a
scheduler slice; when it holds it, about the call's whole duration. Unlike a one-thread against
two-thread timing this does not depend on how busy the shared machine is. The bytes copy is the
control that holds the GIL.

    .venv/bin/python bench/gil_probe.py
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
import time

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MIB = 1024 * 1024


def main() -> int:
    rng = random.Random(1)
    words = [b"alpha", b"beta", b"gamma"] + [rng.randbytes(6) for _ in range(64)]
    plain = b" ".join(rng.choice(words) for _ in range(48 * MIB // 5))[: 48 * MIB]
    compressed = zstandard.ZstdCompressor(level=3).compress(plain)
    decompressor = zstandard.ZstdDecompressor()
    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    sealed = aead.encrypt(nonce, plain, b"blob")
    key = os.urandom(32)
    scratch = tempfile.TemporaryFile(dir="/tmp")
    calls = {
        "zstd decompress": lambda: decompressor.decompress(compressed, max_output_size=len(plain)),
        "AES-GCM decrypt": lambda: aead.decrypt(nonce, sealed, b"blob"),
        "keyed BLAKE3 (max_threads=1)": lambda: blake3.blake3(plain, key=key, max_threads=1).digest(),
        "os.pwrite": lambda: os.pwrite(scratch.fileno(), plain, 0),
        "sha256 (releases: control)": lambda: hashlib.sha256(plain).digest(),
        "bytes copy (holds: control)": lambda: bytes(bytearray(plain)),
    }
    print(f"{'call on 48 MiB':30} {'alone ms':>8} {'longest wait of the spinning thread ms, 3x':>40}")
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        alone = time.perf_counter() - start
        waits = []
        for _ in range(3):
            started, done = threading.Event(), threading.Event()

            def work() -> None:
                started.set()
                call()
                done.set()
            worker = threading.Thread(target=work)
            worker.start()
            started.wait()
            longest, last = 0.0, time.perf_counter()
            while not done.is_set():
                now = time.perf_counter()
                longest, last = max(longest, now - last), now
            worker.join()
            waits.append(longest)
        print(f"{name:30} {alone * 1000:8.1f} {' '.join(f'{w * 1000:5.1f}' for w in waits):>40}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
