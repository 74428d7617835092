"""``safehold serve``: the API under uvicorn with the scheduler running in the same process.

uvicorn turns SIGTERM and SIGINT into a graceful shutdown: it stops
accepting connections, finishes open requests, then runs the app's lifespan
shutdown, which stops the scheduler (running jobs get ``stop_timeout``
seconds, then are recorded interrupted; queued jobs stay queued). The
process then exits 0.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from .. import errors

if TYPE_CHECKING:
    from ..engine.context import Context

#: The distributions of the ``server`` extra (pyproject.toml), by the module each provides.
SERVER_EXTRA = {"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client"}


def require_server_extra() -> None:
    """Raise UsageError naming the extra and the command that installs it when a module of it is missing.

    Checked before anything imports them, so a missing extra is a clear one-line error, not a traceback.
    """
    missing = []
    for module, distribution in SERVER_EXTRA.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(distribution)
    if missing:
        raise errors.UsageError(
            f"'safehold serve' needs the 'server' extra, which is not installed (missing: {', '.join(missing)}); "
            "install it with: pip install 'safehold[server]'")


def log_config() -> dict:
    """uvicorn's logging configuration, with tokens redacted from the access log (``strict.RedactTokens``)."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": "safehold.server.strict.RedactTokens"}
    config["handlers"]["access"]["filters"] = ["redact_tokens"]
    config["loggers"]["uvicorn.access"]["filters"] = ["redact_tokens"]
    return config


def serve(context: Context, *, host: str = "127.0.0.1", port: int = 8080, scheduler: bool = True,
          stop_timeout: float = 30.0, restore_root: str | Path | None = None, log_level: str = "info") -> None:
    """Run until SIGTERM/SIGINT. ``port`` 0 binds a free port (uvicorn logs the one it got)."""
    import signal

    require_server_extra()

    import uvicorn

    from ..scheduler import Scheduler
    from .app import create_app

    runner = Scheduler(context) if scheduler else None
    if runner is not None:
        runner.acquire_lease()  # a second scheduler on this catalog is refused before the port opens
    app = create_app(context, scheduler=runner, stop_timeout=stop_timeout, restore_root=restore_root)
    # uvicorn handles SIGTERM itself (graceful shutdown), then restores the previous handler and
    # re-sends the signal to the process. With this no-op handler restored, the re-sent SIGTERM is
    # absorbed and a completed graceful stop exits 0, which is what service managers expect.
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="on", proxy_headers=False,
                server_header=False, timeout_graceful_shutdown=10, log_config=log_config())
