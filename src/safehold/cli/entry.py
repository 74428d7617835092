"""The ``safehold`` entry point: a running command server (``safehold serve --commands``) runs
the command when there is one for this user and build; otherwise it runs here (``main.run``).
Imports nothing heavy before it knows which (the client is standard library only)."""

from __future__ import annotations

import sys


def run() -> None:
    from ..command_server.client import run_through_server

    status = run_through_server()
    if status is not None:
        sys.exit(status)
    from .main import run as run_here

    run_here()


if __name__ == "__main__":
    run()
