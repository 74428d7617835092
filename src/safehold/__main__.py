"""The ``safehold`` entry point (and ``python -m safehold``): a running command server
(``safehold serve --commands``) runs the command when there is one for this user and build;
otherwise it runs here (``cli.main.run``). Imports nothing heavy before it knows which (the client
is standard library only)."""

from __future__ import annotations

import sys


def run() -> None:
    from .command_server.client import run_through_server

    status = run_through_server()
    if status is not None:
        sys.exit(status)
    if sys.argv[1:] == ["--version"]:
        # Asked by scripts and monitoring, often: answered before Typer, Rich and the command tree
        # load (cli.main answers it too, for callers of main.run).
        from . import __version__

        print(f"safehold {__version__}")
        sys.exit(0)
    from .cli.main import run as run_here

    run_here()


if __name__ == "__main__":
    run()
