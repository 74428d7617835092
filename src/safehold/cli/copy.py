"""``safehold copy``: copy snapshots into another repository (a second copy elsewhere, 3-2-1).

Contract for scripts: exit 0 when every wanted snapshot is on the destination (also when there was
nothing to send), the error's exit code otherwise; ``--json`` prints a list of the figures of each job
on stdout (one per target for a configured copy, one for a url).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .app import JsonOption, ThreadsOption, context


class Verify(str, Enum):  # repository/copy.py VERIFY_MODES
    packs = "packs"
    full = "full"
    none = "none"


def copy(
    to: str = typer.Option(..., "--to", help="A copy named under 'copies:' in targets.yml, or a repository url (a "
                           "path, file:///path or s3://bucket/prefix) created with 'safehold init --copy-params-from'."),
    to_password_env: Optional[str] = typer.Option(None, "--to-password-env", metavar="VAR",
                                                  help="Variable holding the destination's password "
                                                       "(default SAFEHOLD_PASSWORD)."),
    to_password_file: Optional[Path] = typer.Option(None, "--to-password-file", metavar="FILE",
                                                    help="File holding the destination's password."),
    to_endpoint_url: Optional[str] = typer.Option(None, "--to-endpoint-url", help="S3 endpoint of the destination."),
    to_region: Optional[str] = typer.Option(None, "--to-region", help="AWS region of the destination's bucket."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only this target's snapshots."),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", metavar="ID",
                                           help="Only this snapshot (id prefix, 'latest' or 'latest:TARGET')."),
    verify: Verify = typer.Option(Verify.packs, "--verify",
                               help="How what was sent is checked on the destination before the snapshot is "
                                    "written: 'packs' reads each written pack back and hashes it to its name "
                                    "(default), 'full' also decrypts every sent blob and hashes it to its id, "
                                    "'none' reads nothing back."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Same as --verify none."),
    threads: Optional[int] = ThreadsOption,
    json_output: bool = JsonOption,
) -> None:
    """Copy snapshots to another repository: only the blobs it lacks are sent, the snapshot last."""
    from ..engine.copy import copy_to
    from .output import print_json

    ctx, display = context(json_output, threads)
    with display:
        results = copy_to(ctx, to, target=target, snapshot_ref=snapshot, verify="none" if no_verify else verify.value,
                          password_env=to_password_env, password_file=str(to_password_file) if to_password_file else None,
                          endpoint_url=to_endpoint_url, region=to_region)
    if json_output:
        print_json(results)  # a list: one entry per job (per target for a configured copy)
        return
    for result in results:
        _print_result(result)


def _print_result(result: dict) -> None:
    from .output import human_bytes

    for copied in result["copied"]:
        typer.echo(f"{copied['target']}: snapshot {copied['source'][:8]} copied as {copied['destination'][:8]}")
    typer.echo(f"{result['snapshots_copied']} snapshot(s) copied, {result['snapshots_skipped']} already there; "
               f"sent {result['blobs_sent']} of {result['blobs_total']} blob(s), "
               f"{human_bytes(result['bytes_sent'])}, in {result['duration']:.1f}s"
               + _verified(result))
    if result.get("snapshots_dropped"):
        typer.echo(f"{result['snapshots_dropped']} snapshot(s) not sent: the copy's retention dropped them before")
    for outcome in result.get("retention") or []:
        if "skipped" in outcome:
            typer.echo(f"retention not applied this time: {outcome['skipped']}")
        elif outcome["forgotten"]:
            typer.echo(f"{outcome['target']}: the copy's retention ({outcome['policy']}) forgot "
                       f"{len(outcome['forgotten'])} copy(ies), kept {len(outcome['kept'])}")


def _verified(result: dict) -> str:
    mode = result.get("verify", "none")
    if mode == "full":
        return f"; {result['blobs_verified']} blob(s) read back, decrypted and checked"
    if mode == "packs":
        return (f"; {result['packs_verified']} pack(s) holding {result['blobs_verified']} blob(s) read back and "
                "checked")
    return ""


def register(app: typer.Typer) -> None:
    app.command("copy")(copy)
