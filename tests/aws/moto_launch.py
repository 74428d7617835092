"""Run a moto server on loopback with safehold's extensions applied (``moto_extensions``).

Started by ``moto_support.MotoServer`` as a separate process, so every test
session (and the IAM-enforcing server beside it) has its own moto state:
moto keeps its backends and its authentication switch in process globals.
Prints ``PORT <n>`` once listening and serves until stdin closes or SIGTERM.

    python moto_launch.py [--vanilla]
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    vanilla = "--vanilla" in sys.argv[1:]
    if not vanilla:
        import moto_extensions

        moto_extensions.apply_all()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"PORT {server.get_host_and_port()[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sys.stdin.read()  # returns when the parent closes the pipe or dies
    finally:
        server.stop()


if __name__ == "__main__":
    main()
