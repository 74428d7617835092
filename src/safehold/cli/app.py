"""The Typer application and what every command module shares: the app and its sub-apps, the
global ``--config`` option (kept in ``state``), common options and ``context()``, which builds the
engine's Context for a command.

Command modules (``main`` and the feature modules listed in ``main.COMMAND_MODULES``) import this
module, never ``main``: ``main`` imports them to register their commands, so importing it from
them would be a cycle.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .. import __version__
from ..errors import UsageError
from .output import ProgressDisplay

app = typer.Typer(
    name="safehold", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Backup and disaster recovery: one encrypted, deduplicated repository for files and disk images.",
)
key_app = typer.Typer(help="Manage the passwords (key files) that open the repository.", no_args_is_help=True)
config_app = typer.Typer(help="Validate and describe targets.yml.", no_args_is_help=True)
catalog_app = typer.Typer(help="The job catalog and its snapshot cache.", no_args_is_help=True)
app.add_typer(key_app, name="key")
app.add_typer(config_app, name="config")
app.add_typer(catalog_app, name="catalog")

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
ThreadsOption = typer.Option(None, "--threads", min=1, help="Worker threads (default: the number of cores).")
RepositoryOption = typer.Option(None, "--repository", metavar="NAME",
                                help="Read the copy named NAME under 'copies:' in targets.yml instead of the "
                                     "configured repository (e.g. the off-site copy when the site is lost).")


class State:
    config_path: Optional[str] = None
    key_id: Optional[str] = None
    cache: bool = True


state = State()


@app.callback(invoke_without_command=True)
def global_options(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", envvar="SAFEHOLD_CONFIG", help="targets.yml to use (default ./configs/targets.yml)."
    ),
    key_id: Optional[str] = typer.Option(
        None, "--key-id", envvar="SAFEHOLD_KEY_ID",
        help="Try only this key file (a prefix of its id, see 'safehold key list'): one password derivation "
             "in a repository with many keys.",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", envvar="SAFEHOLD_NO_CACHE",
        help="Read every snapshot and index object from the repository, not from the local cache in the state "
             "folder (as 'cache: false' in targets.yml).",
    ),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(f"safehold {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    state.config_path = str(config) if config else None
    state.key_id = key_id or None
    state.cache = not no_cache


def context(json_output: bool = False, threads: int | None = None, compression: int | None = None,
            progress: bool = True, repository: str | None = None):
    from ..engine.context import Context

    display = ProgressDisplay(enabled=progress and not json_output)
    ctx = Context.load(state.config_path, threads=threads, compression=compression, progress=display,
                       ask_password=_prompt_password if sys.stdin.isatty() else None, key_id=state.key_id,
                       cache=state.cache)
    ctx.use_repository(repository)  # CopyNotFound for a name 'copies:' does not have
    return ctx, display


def _prompt_password(new: bool) -> bytes:
    if new:
        value = typer.prompt("password for the new repository", hide_input=True, confirmation_prompt=True)
    else:
        value = typer.prompt("repository password", hide_input=True)
    if not value:
        raise UsageError("the password is empty")
    return value.encode()
