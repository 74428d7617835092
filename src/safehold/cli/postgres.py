"""``safehold postgres restore``: a database of a postgres dump snapshot into a PostgreSQL server
(pg_restore; a new database by default, ``--clean`` to replace one); ``safehold command restore``:
a file of a snapshot piped into a program. Backups run through ``safehold backup``; the raw dump
files restore into a directory with ``safehold restore SNAPSHOT --to DIR``."""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOption, context


def register(app: typer.Typer) -> None:
    from .output import print_json

    postgres_app = typer.Typer(help="PostgreSQL: restore a database from a dump snapshot.", no_args_is_help=True)
    app.add_typer(postgres_app, name="postgres")
    command_app = typer.Typer(help="Pipe a file of a snapshot into a program.", no_args_is_help=True)
    app.add_typer(command_app, name="command")

    @postgres_app.command("restore")
    def restore(
        snapshot: str = typer.Argument(..., help="Snapshot id (prefix), 'latest' or 'latest:TARGET'."),
        to_dsn: Optional[str] = typer.Option(None, "--to-dsn", help="libpq DSN of the server to restore a dump "
                                             "into, without a password (e.g. 'host=db-02 user=postgres')."),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="A physical snapshot: the new (or empty) "
                                               "data directory to extract the base backup into."),
        owner: Optional[str] = typer.Option(None, "--owner", help="With --data-dir: the user to own the files "
                                            "(e.g. postgres, when restoring as root)."),
        database: Optional[str] = typer.Option(None, "--database", "-d",
                                               help="The database of the snapshot (default: every one it holds)."),
        new_name: Optional[str] = typer.Option(None, "--as", metavar="NAME",
                                               help="Restore it under this name (default: its own)."),
        clean: bool = typer.Option(False, "--clean", help="Replace the contents of an existing database "
                                   "(default: a new database; an existing one is refused)."),
        no_owner: bool = typer.Option(False, "--no-owner", help="Leave out ownership and grants (a server "
                                      "without the original roles)."),
        password_env: Optional[str] = typer.Option(None, "--password-env", metavar="VAR",
                                                   help="Environment variable holding the server's password."),
        bin_dir: Optional[str] = typer.Option(None, "--bin-dir", help="Folder of the PostgreSQL client tools."),
        target: Optional[str] = typer.Option(None, "--target", "-t", help="With 'latest': the target's newest."),
        json_output: bool = JsonOption,
    ) -> None:
        """Restore databases of a postgres dump snapshot with pg_restore, in one transaction each; or a
        physical snapshot into a data directory."""
        from ..engine.restore import restore_snapshot
        from ..errors import UsageError

        if (to_dsn is None) == (data_dir is None):
            raise UsageError("give --to-dsn (a dump snapshot, into a server) or --data-dir (a physical snapshot)")
        spec = {"kind": "postgres", "to_dsn": to_dsn, "database": database, "new_name": new_name, "clean": clean,
                "no_owner": no_owner, "password_env": password_env, "bin_dir": bin_dir, "data_dir": data_dir,
                "owner": owner}
        ctx, display = context(json_output)
        with display:
            outcome = restore_snapshot(ctx, snapshot, spec, target=target)
        result = {"snapshot_id": outcome.snapshot_id, "target": outcome.target, **outcome.details,
                  "bytes_written": outcome.bytes_written, "duration": outcome.duration, "job_id": outcome.job_id}
        if json_output:
            print_json(result)
            return
        if data_dir is not None:
            typer.echo(f"extracted the base backup of snapshot {outcome.snapshot_id[:8]} ({outcome.target}) into "
                       f"{outcome.details['data_dir']}: {outcome.details['files']} files; start a server on it")
            return
        for source, name in outcome.details["databases"].items():
            typer.echo(f"restored database {source!r} as {name!r} on {outcome.details['server']} "
                       f"from snapshot {outcome.snapshot_id[:8]} ({outcome.target}) in {outcome.duration:.1f}s")

    @command_app.command("restore")
    def pipe(
        snapshot: str = typer.Argument(..., help="Snapshot id (prefix), 'latest' or 'latest:TARGET'."),
        run: str = typer.Option(..., "--run", help="Shell command that reads the file on its standard input, "
                                "e.g. 'mysql shop'."),
        file: Optional[str] = typer.Option(None, "--file", help="The file of the snapshot (default: its only file)."),
        cwd: Optional[str] = typer.Option(None, "--cwd", help="Working directory of the command."),
        target: Optional[str] = typer.Option(None, "--target", "-t", help="With 'latest': the target's newest."),
        json_output: bool = JsonOption,
    ) -> None:
        """Pipe a file of a snapshot (a command target's output) into a program; fails unless it exits 0."""
        from ..engine.restore import restore_snapshot

        ctx, display = context(json_output)
        with display:
            outcome = restore_snapshot(ctx, snapshot, {"kind": "command", "run": run, "file": file, "cwd": cwd},
                                       target=target)
        if json_output:
            print_json({"snapshot_id": outcome.snapshot_id, "target": outcome.target, **outcome.details,
                        "bytes_written": outcome.bytes_written, "duration": outcome.duration, "job_id": outcome.job_id})
            return
        typer.echo(f"piped {outcome.details['file']} ({outcome.bytes_written} bytes) of snapshot "
                   f"{outcome.snapshot_id[:8]} into {run!r}: exit status 0")
