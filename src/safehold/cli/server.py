"""``safehold serve`` (the control plane: REST API, /metrics, scheduler) and ``safehold token create|list|revoke``.

Commands parse arguments, call ``safehold.server`` / the catalog's token store and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import JsonOption, context, state
from .output import print_json, print_table

ConfigOption = typer.Option(None, "--config", "-c", envvar="SAFEHOLD_CONFIG",
                            help="targets.yml to use (same as the global --config).")

token_app = typer.Typer(help="API tokens for 'safehold serve' (only a hash of each is stored).",
                        no_args_is_help=True)


def _context(config: Optional[Path]):

    if config is not None:
        state.config_path = str(config)
    ctx, _ = context(progress=False)
    return ctx


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    config: Optional[Path] = ConfigOption,
    no_scheduler: bool = typer.Option(False, "--no-scheduler",
                                      help="Serve the API only; queued jobs wait for a scheduler elsewhere."),
    stop_timeout: float = typer.Option(30.0, "--stop-timeout", min=0,
                                       help="On SIGTERM, seconds running jobs get before they are recorded "
                                            "interrupted."),
    restore_root: Optional[Path] = typer.Option(None, "--restore-root",
                                                help="API-triggered restores write only inside this directory "
                                                     "(default <state_dir>/restores)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    commands: bool = typer.Option(False, "--commands",
                                  help="Also run commands of this user through a pre-loaded process on "
                                       "<state_dir>/command.sock (docs/design/command-server.md)."),
    commands_only: bool = typer.Option(False, "--commands-only",
                                       help="Only the command server: no API, no scheduler."),
    key_cache_idle: float = typer.Option(600.0, "--key-cache-idle", min=0, metavar="SECONDS",
                                         help="With --commands: forget the derived repository keys after this "
                                              "long without a command (0: never keep them)."),
) -> None:
    """Run the control plane: REST API (/api/v1, /openapi.json), /metrics, /healthz, /readyz and the scheduler."""
    import logging

    if commands or commands_only:
        # Before anything starts a thread: the command server is forked from this process.
        from ..command_server.zygote import command_socket, serve_commands, start
        from ..config import load_config

        if config is not None:
            state.config_path = str(config)
        path = command_socket(load_config(state.config_path).state_dir)
        if commands_only:
            serve_commands(path, key_cache_idle)
            return
        start(path, key_cache_idle)
    from ..server.serve import require_server_extra, serve as run_server

    require_server_extra()  # before the configuration: the first thing to fix when the extra is missing
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = _context(config)
    run_server(ctx, host=host, port=port, scheduler=not no_scheduler, stop_timeout=stop_timeout,
               restore_root=restore_root, log_level=log_level)


@token_app.command("create")
def token_create(
    name: str = typer.Option(..., "--name", help="Who or what uses the token (e.g. grafana, ci)."),
    role: str = typer.Option("viewer", "--role", help="viewer (reads), operator (also runs jobs), admin (also "
                                                      "manages tokens)."),
    json_output: bool = JsonOption,
) -> None:
    """Create an API token and print it (shown only this once)."""
    from ..catalog.tokens import TokenStore

    record, secret = TokenStore(_context(None).catalog).create(name, role)
    if json_output:
        print_json({"token": record.as_dict(), "secret": secret})
        return
    typer.echo(secret)
    typer.echo(f"token {record.id} ({record.name}, {record.role}); store it now, it cannot be shown again",
               err=True)


@token_app.command("list")
def token_list(
    include_revoked: bool = typer.Option(False, "--all", help="Also list revoked tokens."),
    json_output: bool = JsonOption,
) -> None:
    """List API tokens (ids, names, roles; never the tokens)."""
    from ..catalog.tokens import TokenStore

    records = TokenStore(_context(None).catalog).list(include_revoked=include_revoked)
    if json_output:
        print_json({"tokens": [record.as_dict() for record in records]})
        return
    print_table(["id", "name", "role", "created", "last used", "revoked"], (
        [r.id, r.name, r.role, f"{r.created_at:%Y-%m-%d %H:%M}",
         f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never",
         f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else ""] for r in records))


@token_app.command("revoke")
def token_revoke(token_id: int = typer.Argument(..., help="Id from 'safehold token list'."),
                 json_output: bool = JsonOption) -> None:
    """Revoke an API token; requests with it get 401 from then on."""
    from ..catalog.tokens import TokenStore

    record = TokenStore(_context(None).catalog).revoke(token_id)
    if json_output:
        print_json(record.as_dict())
        return
    typer.echo(f"revoked token {record.id} ({record.name}, {record.role})")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
