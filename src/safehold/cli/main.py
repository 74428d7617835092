"""The ``safehold`` command. Commands parse arguments, call ``engine`` and print; no logic here.

Engine modules are imported inside each command so that ``safehold --help`` and
quick commands do not pay for what they do not use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from ..errors import SafeholdError, UsageError
from ..text import printable
from .app import JsonOption, RepositoryOption, ThreadsOption, app, catalog_app, config_app, context, key_app, state
from .output import error_console, human_bytes, print_json, print_table

# --- repository ---------------------------------------------------------------


@app.command()
def init(
    copy_params_from: Optional[str] = typer.Option(
        None, "--copy-params-from", metavar="SOURCE",
        help="Share the id key and chunking parameters of the repository at this url, so 'safehold copy' "
             "between them sends only missing blobs (its own password and master key stay separate)."),
    from_password_env: Optional[str] = typer.Option(None, "--from-password-env", metavar="VAR",
                                                    help="Variable holding SOURCE's password."),
    from_password_file: Optional[Path] = typer.Option(None, "--from-password-file", metavar="FILE",
                                                      help="File holding SOURCE's password."),
    for_copy: Optional[str] = typer.Option(
        None, "--for-copy", metavar="NAME",
        help="Create instead the destination of the copy NAME under 'copies:', sharing the configured "
             "repository's id key and chunking parameters (its password from the copy's own settings)."),
    json_output: bool = JsonOption,
) -> None:
    """Create the repository named in the configuration (and the job catalog)."""
    from ..engine.maintenance import init_repository

    ctx, _ = context(json_output)
    if for_copy is not None:
        from ..engine.copy import init_copy_destination

        if copy_params_from is not None:
            raise UsageError("--for-copy already takes the parameters of the configured repository: "
                             "leave out --copy-params-from")
        result = init_copy_destination(ctx, for_copy)
    elif copy_params_from is not None:
        from ..engine.copy import init_with_params_from, repository_spec

        if from_password_env is None and from_password_file is None:
            raise UsageError("name where the password of --copy-params-from comes from: "
                             "--from-password-env VAR or --from-password-file FILE")
        source = repository_spec(copy_params_from, from_password_env,
                                 str(from_password_file) if from_password_file else None)
        result = init_with_params_from(ctx, source)
    else:
        result = init_repository(ctx)
    if json_output:
        print_json(result)
    else:
        typer.echo(f"created repository {result['id'][:8]} at {result['url']}")
        if result.get("params_from"):
            typer.echo(f"it shares the id key and chunking parameters of {result['params_from'][:8]} "
                       f"at {result['params_from_url']}")
        typer.echo("keep the password safe: without it the backups cannot be read")


@app.command()
def backup(
    target: list[str] = typer.Option([], "--target", "-t", help="Target name from targets.yml (repeatable)."),
    all_targets: bool = typer.Option(False, "--all", help="Back up every target."),
    threads: Optional[int] = ThreadsOption,
    compression: Optional[int] = typer.Option(None, "--compression", min=-7, max=22,
                                              help="zstd level (default 3)."),
    parallel: Optional[int] = typer.Option(None, "--parallel", min=1,
                                           help="Targets backed up side by side (default 2)."),
    force_read: bool = typer.Option(False, "--force-read",
                                    help="Read every file and disk image whole, even unchanged ones "
                                         "(their size, times and inode match the last snapshot)."),
    json_output: bool = JsonOption,
) -> None:
    """Back up targets into new snapshots."""
    from ..engine.backup import backup_targets

    ctx, display = context(json_output, threads, compression)
    names = [t.name for t in ctx.config.targets] if all_targets else list(target)
    if not names:
        raise UsageError("name a target with --target NAME, or use --all")
    if not all_targets:
        for name in names:
            ctx.config.target(name)
    with display:
        run = backup_targets(ctx, names, parallel, force_read=force_read)
    if json_output:
        print_json({"results": [r.as_dict() for r in run.results],
                    "failures": {name: exc.as_dict() for name, exc in run.failures.items()}})
        if len(names) > 1:  # a single failure is printed once, below
            for name, exc in run.failures.items():
                _print_error(exc, prefix=f"{name}: ")
    else:
        for result in run.results:
            s = result.summary
            new = f"{s['files_new']} new, {s['files_changed']} changed, {s['files_unchanged']} unchanged file(s)" \
                if result.kind == "files" else f"{s['chunks_reused_unread']} chunk(s) reused unread, {s['holes']} hole(s)"
            typer.echo(
                f"{result.target}: snapshot {result.snapshot_id[:8]}"
                f"{' (incremental on ' + result.parent_id[:8] + ')' if result.parent_id else ' (full)'}: "
                f"{new}; read {human_bytes(s['bytes_read'])} of {human_bytes(s['bytes_total'])}, "
                f"added {human_bytes(s['bytes_added'])} in {result.duration:.1f}s"
            )
            for warning in s.get("warnings", []):
                error_console.print(f"[yellow]warning[/]: {warning}")
            _print_skipped(result.target, result.job_id, result.skipped)
        if len(names) > 1:
            for name, exc in run.failures.items():
                _print_error(exc, prefix=f"{name}: ")
    error = run.error()
    if error is not None:
        raise error


SKIPPED_SHOWN = 20


def _escaped(value: object) -> str:
    """A text the engine stored escaped (``printable``): shown as it is, so a name's escapes are not
    doubled, unless it holds something unprintable after all."""
    text = value if isinstance(value, str) else str(value)
    return text if text.isprintable() else printable(text)


def _print_skipped(target: str, job_id: int, skipped: dict) -> None:
    """What a partial backup left out, on stderr (paths arrive escaped by the engine)."""
    if not skipped["count"]:
        return
    lines = [f"{target}: partial snapshot: {skipped['count']} item(s) left out or changed while read"]
    for entry in skipped["items"][:SKIPPED_SHOWN]:
        lines.append(f"  {entry['reason']}: {entry['path']} ({entry['type']}): {entry['detail']}")
    if skipped["count"] > SKIPPED_SHOWN:
        lines.append(f"  ... and {skipped['count'] - SKIPPED_SHOWN} more: safehold jobs --id {job_id}")
    typer.echo("\n".join(lines), err=True)


@app.command()
def snapshots(target: Optional[str] = typer.Option(None, "--target", "-t"),
              repository: Optional[str] = RepositoryOption,
              clean: bool = typer.Option(False, "--clean", help="Only restore points judged clean (no ransomware "
                                         "signal, not after a suspicious snapshot); the last is 'latest-clean:TARGET'."),
              json_output: bool = JsonOption) -> None:
    """List snapshots, oldest first, with their ransomware verdict."""
    from ..engine.browse import list_snapshots

    ctx, _ = context(json_output, repository=repository)
    damaged: list[tuple[str, str]] = []
    rows = list_snapshots(ctx, target, damaged, clean_only=clean)
    if json_output:
        print_json(rows)
        _damaged_snapshots(damaged)
        return
    columns = ["id", "time", "target", "kind", "files", "size", "added", "skipped", "verdict"]
    notes = {r["id"]: _snapshot_note(r) for r in rows}
    noted = any(notes.values())  # the note column appears only when a snapshot needs one
    print_table(columns + (["note"] if noted else []), (
        [r["short_id"], r["time"][:19].replace("T", " "), r["target"], r["kind"], r["files"],
         human_bytes(r["bytes_total"]), human_bytes(r["bytes_added"]), r["skipped"]["count"] or "",
         _verdict_cell(r["verdict"])]
        + ([notes[r["id"]]] if noted else [])
        for r in rows))
    typer.echo(f"{len(rows)} snapshot(s)")
    for r in rows:
        if r["verdict"]["verdict"] == "suspicious":
            error_console.print(f"[red]suspicious[/]: snapshot {r['short_id']} of {printable(r['target'])}: "
                                + _reasons_text(r["verdict"]["reasons"]), highlight=False, soft_wrap=True)
    for r in rows:
        if r.get("replayed"):
            error_console.print(f"[red]replayed[/]: snapshot {r['short_id']} was forgotten and is present again "
                                f"({printable(_describe_record(r['replayed']))}); 'safehold forget {r['short_id']}' "
                                "removes it", highlight=False, soft_wrap=True)
    _damaged_snapshots(damaged)


def _verdict_cell(verdict: dict) -> str:
    text = verdict["verdict"]
    if verdict["source"] == "operator":
        text += " (marked)"
    if verdict.get("after_suspicious"):
        text += f" after {verdict['after_suspicious'][:8]}"
    return text


def _reasons_text(reasons: list[dict]) -> str:
    parts = []
    for reason in reasons:
        text = f"{reason['signal']} {reason['value']:g}" if isinstance(reason["value"], (int, float)) else reason["signal"]
        if reason.get("extension"):
            text += f" (.{reason['extension']})"
        if reason["files"]:
            text += ": " + ", ".join(reason["files"][:3]) + (" ..." if len(reason["files"]) > 3 else "")
        parts.append(text)
    return "; ".join(parts)


def _damaged_snapshots(damaged: list[tuple[str, str]]) -> None:
    """Name each snapshot object that could not be read, then fail (the others were listed)."""
    from ..errors import IntegrityError

    if not damaged:
        return
    for name, reason in damaged:
        error_console.print(f"[red]unreadable[/]: snapshot {name[:8]}: {printable(reason)}", highlight=False,
                            soft_wrap=True)
    raise IntegrityError(detail=f"{len(damaged)} snapshot object(s) cannot be read ("
                         + ", ".join(name[:8] for name, _ in damaged) + "); nothing of them can be restored or "
                         "repaired: 'safehold forget ID' removes each, then 'safehold prune' can run again")


def _snapshot_note(row: dict) -> str:
    notes = []
    if row.get("replayed"):
        notes.append("REPLAYED (forgotten before)")
    if row.get("original"):
        notes.append(f"repaired from {row['original'][:8]}")
    if row.get("copies"):
        notes.append(printable("also in " + ", ".join(row["copies"])))
    if row.get("copied_from"):
        origin = row["copied_from"]
        notes.append(printable(f"copy of {origin['snapshot'][:8]} from {origin.get('url') or origin['repository'][:8]}"))
    return "; ".join(notes)


def _describe_record(record: dict) -> str:
    if record.get("unreadable"):
        return f"forget record {record['name'][:16]}, unreadable"
    return f"forgotten {record.get('forgotten_at')} on {record.get('hostname')}, forget record {record['name'][:16]}"


@app.command("ls")
def list_contents(
    snapshot: str = typer.Argument(..., help="Snapshot id (prefix), 'latest' or 'latest:TARGET'."),
    path: Optional[str] = typer.Argument(None, help="Only this path and what is under it."),
    repository: Optional[str] = RepositoryOption,
    json_output: bool = JsonOption,
) -> None:
    """List the files (or disk images) in a snapshot."""
    from ..engine.browse import list_items

    ctx, _ = context(json_output, repository=repository)
    items = list_items(ctx, snapshot, path)
    if json_output:
        print_json(items)
        return
    for item in items:
        link = f" -> {printable(item['target'])}" if item["type"] == "symlink" else ""
        suffix = "/" if item["type"] == "dir" else link
        typer.echo(f"{printable(item['type'][:4]):4} {item['mode']:>7} {human_bytes(item['size']):>10}  "
                   f"{printable(item['path'])}{suffix}")


@app.command()
def diff(first: str, second: str, json_output: bool = JsonOption) -> None:
    """Show what changed between two snapshots (+ added, - removed, M modified, U metadata, T type)."""
    from ..engine.browse import diff_snapshots

    ctx, _ = context(json_output)
    differences = diff_snapshots(ctx, first, second)
    if json_output:
        print_json([d.as_dict() for d in differences])
        return
    for difference in differences:
        typer.echo(f"{difference.change}  {printable(difference.path)}")
    typer.echo(f"{len(differences)} difference(s)")


@app.command()
def restore(
    snapshot: Optional[str] = typer.Argument(None, help="Snapshot id (prefix), 'latest' or 'latest:TARGET'."),
    to: Optional[str] = typer.Option(None, "--to", help="Directory (file snapshots), image file / block device, "
                                     "or ssh://user@host/path (file snapshots to another host over SFTP)."),
    include: list[str] = typer.Option([], "--include", "-i", help="Restore only this path (repeatable)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="With 'latest': the target's newest."),
    all_targets: bool = typer.Option(False, "--all", help="Restore the newest snapshot of every target into "
                                     "--to DIR/<target>, in one process (the whole estate)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow a non-empty directory or existing file."),
    special_files: bool = typer.Option(False, "--special-files", help="Create device nodes and keep setuid/setgid "
                                       "bits (without it they are skipped or removed, and listed)."),
    snapshot_id: Optional[str] = typer.Option(
        None, "--snapshot-id", help="Same as SNAPSHOT; also an EBS snapshot id (snap-...) with --destination-instance."),
    destination_instance: Optional[str] = typer.Option(
        None, "--destination-instance", help="EC2 instance: restore to a new EBS volume attached to it."),
    device: Optional[str] = typer.Option(None, "--device", help="With --destination-instance: device name "
                                         "(default: the first free of /dev/sdf-/dev/sdp)."),
    region: Optional[str] = typer.Option(None, "--region", help="With --destination-instance: the snapshot's region; "
                                         "with --to-ec2: the region to launch in."),
    to_ec2: bool = typer.Option(False, "--to-ec2", help="Every disk of a VM or image snapshot into EBS snapshots, "
                                "an AMI and a new EC2 instance."),
    instance_type: Optional[str] = typer.Option(None, "--instance-type", help="With --to-ec2 (default t3.micro)."),
    subnet: Optional[str] = typer.Option(None, "--subnet", help="With --to-ec2: subnet id."),
    security_group: list[str] = typer.Option([], "--security-group", help="With --to-ec2: security group id (repeatable)."),
    key_name: Optional[str] = typer.Option(None, "--key-name", help="With --to-ec2: EC2 key pair."),
    boot_disk: Optional[str] = typer.Option(None, "--boot-disk", help="With --to-ec2: the disk to boot (default vda)."),
    architecture: Optional[str] = typer.Option(None, "--architecture", help="With --to-ec2: x86_64, arm64 or i386."),
    boot_mode: Optional[str] = typer.Option(None, "--boot-mode", help="With --to-ec2: legacy-bios, uefi or uefi-preferred."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --to-ec2: print the plan, make nothing."),
    allow_replayed: bool = typer.Option(False, "--allow-replayed", help="Restore a snapshot that was forgotten and "
                                        "is present again (refused by default: its object was copied back)."),
    repository: Optional[str] = RepositoryOption,
    threads: Optional[int] = ThreadsOption,
    json_output: bool = JsonOption,
) -> None:
    """Restore a snapshot. Every chunk is verified; damaged files are named, never written wrong."""
    from ..errors import RestoreIncomplete

    if all_targets:
        if snapshot or snapshot_id or target or include or destination_instance:
            raise UsageError("--all restores the newest snapshot of every target: give only --to DIR "
                             "(and --overwrite, --threads, --json)")
        if not to:
            raise UsageError("name the directory to restore every target into with --to DIR")
        _restore_all(to, overwrite, threads, json_output, special_files, repository)
        return
    if snapshot and snapshot_id and snapshot != snapshot_id:
        raise UsageError("give the snapshot once: as an argument or with --snapshot-id")
    snapshot = snapshot or snapshot_id
    if not snapshot:
        raise UsageError("name the snapshot to restore (an id, 'latest', or --snapshot-id)")
    if to_ec2:
        from .ec2 import restore_to_ec2

        restore_to_ec2(snapshot, region=region, instance_type=instance_type, subnet=subnet,
                       security_groups=security_group, key_name=key_name, boot_disk=boot_disk,
                       architecture=architecture, boot_mode=boot_mode, dry_run=dry_run, target=target,
                       threads=threads, json_output=json_output)
        return
    if destination_instance:
        if repository:
            raise UsageError("--destination-instance restores from the configured repository (or an EBS "
                             "snapshot's DR copy); leave out --repository")
        from .ebs import restore_to_instance

        restore_to_instance(snapshot, destination_instance, device=device, region=region, target=target,
                            include=include, threads=threads, json_output=json_output)
        return
    if not to:
        raise UsageError("name where to restore with --to (or --destination-instance for EBS)")
    from ..engine.restore import restore_snapshot

    ctx, display = context(json_output, threads, repository=repository)
    try:
        with display:
            outcome = restore_snapshot(ctx, snapshot, to, target=target, includes=include, overwrite=overwrite,
                                       special_files=special_files, allow_replayed=allow_replayed)
    except RestoreIncomplete as exc:
        outcome = exc.fields["outcome"]
        _print_restore(outcome, json_output)
        raise
    _print_restore(outcome, json_output)


def _restore_all(to: str, overwrite: bool, threads: Optional[int], json_output: bool,
                 special_files: bool = False, repository: Optional[str] = None) -> None:
    from ..engine.restore import restore_targets
    from ..errors import PartialFailure, RestoreIncomplete

    ctx, display = context(json_output, threads, repository=repository)
    names = [t.name for t in ctx.config.targets]
    with display:
        run = restore_targets(ctx, to, names, overwrite=overwrite, special_files=special_files)
    if json_output:
        print_json(run.as_dict())
    else:
        for outcome in run.results:
            _print_restore(outcome, False)
        for name, why in run.skipped.items():
            error_console.print(f"[yellow]skipped[/]: {name}: {why}", highlight=False)
    for name, exc in run.failures.items():
        if isinstance(exc, RestoreIncomplete) and not json_output:
            _print_restore(exc.fields["outcome"], False)
        _print_error(exc, prefix=f"{name}: ")
    if run.failures:
        raise PartialFailure(failed=len(run.failures), total=len(run.results) + len(run.failures),
                             names=", ".join(run.failures))


def _print_restore(outcome, json_output: bool) -> None:
    from rich.markup import escape

    if json_output:
        print_json(outcome.as_dict())
        return
    typer.echo(f"restored snapshot {outcome.snapshot_id[:8]} ({outcome.target}) to {outcome.destination}: "
               f"{outcome.files} file(s), {human_bytes(outcome.bytes_written)} in {outcome.duration:.1f}s")
    for line in outcome.damaged:
        error_console.print(f"[red]damaged, not restored[/]: {escape(printable(line))}", highlight=False)
    for line in getattr(outcome, "special", []):
        error_console.print(f"[yellow]special[/]: {escape(printable(line))}", highlight=False)


@app.command()
def check(
    read_data: bool = typer.Option(False, "--read-data", help="Read and verify every pack."),
    read_data_subset: Optional[str] = typer.Option(None, "--read-data-subset", metavar="PERCENT",
                                                   help="Read and verify this share of packs, e.g. 10%."),
    json_output: bool = JsonOption,
) -> None:
    """Verify the repository's structure, and with --read-data its data."""
    from ..engine.maintenance import check_repository
    from ..errors import CheckFailed

    percent = 100.0 if read_data else 0.0
    if read_data_subset is not None:
        try:
            percent = float(read_data_subset.rstrip("%"))
            if not 0 < percent <= 100:
                raise ValueError
        except ValueError:
            raise UsageError(f"--read-data-subset {read_data_subset!r}: give a percentage between 0 and 100, e.g. 10%") from None
    ctx, display = context(json_output)
    try:
        with display:
            report = check_repository(ctx, percent)
    except CheckFailed as exc:
        _print_check(exc.fields["report"], json_output)
        raise
    _print_check(report, json_output)


def _print_check(report, json_output: bool) -> None:
    if json_output:
        print_json(report.as_dict())
        return
    typer.echo(f"{report.snapshots} snapshot(s), {report.packs} pack(s), {report.blobs} blob(s)"
               + (f"; read {report.packs_read} pack(s), {human_bytes(report.bytes_read)}" if report.packs_read else ""))
    for line in report.errors:
        error_console.print(f"[red]error[/]: {line}")
    for damaged in report.damaged_packs:
        error_console.print(f"[red]damaged pack[/] {damaged.pack}: {damaged.reason}")
        error_console.print(f"  snapshots: {', '.join(damaged.snapshots) or 'none'}")
        for name in damaged.files[:50]:
            error_console.print(f"  file: {name}")
    garbage_packs = len(report.unreferenced_packs) - len(report.unindexed_packs_in_use)
    if garbage_packs or report.unused_blobs:
        typer.echo(f"garbage (not an error): {garbage_packs} unreferenced pack(s), "
                   f"{report.unused_blobs} unused blob(s); 'safehold prune' removes them")
    if report.ok:
        typer.echo("no errors found")


@app.command()
def forget(
    snapshot_ids: Optional[list[str]] = typer.Argument(
        None, metavar="ID", help="Forget exactly these snapshots (ids or unique prefixes of 4+ characters) "
        "instead of applying retention rules."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only this target's snapshots."),
    keep_last: Optional[int] = typer.Option(None, "--keep-last", min=0),
    keep_hourly: Optional[int] = typer.Option(None, "--keep-hourly", min=0),
    keep_daily: Optional[int] = typer.Option(None, "--keep-daily", min=0),
    keep_weekly: Optional[int] = typer.Option(None, "--keep-weekly", min=0),
    keep_monthly: Optional[int] = typer.Option(None, "--keep-monthly", min=0),
    keep_yearly: Optional[int] = typer.Option(None, "--keep-yearly", min=0),
    keep_within: Optional[str] = typer.Option(None, "--keep-within", help="Keep all within this age, e.g. 7d."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what would go and why the rest stays."),
    and_prune: bool = typer.Option(False, "--prune", help="Prune unused data afterwards."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for a conflicting lock."),
    json_output: bool = JsonOption,
) -> None:
    """Remove snapshots by the retention rules of targets.yml, by the --keep-* flags, or by id.

    Each removed snapshot leaves a forget record, so a copy put back later is flagged as replayed."""
    from ..engine.maintenance import forget_snapshots
    from ..repository.retention import RetentionPolicy

    override = None
    flags = dict(keep_last=keep_last, keep_hourly=keep_hourly, keep_daily=keep_daily, keep_weekly=keep_weekly,
                 keep_monthly=keep_monthly, keep_yearly=keep_yearly)
    if any(v is not None for v in flags.values()) or keep_within:
        from ..config import parse_duration

        try:
            within = parse_duration(keep_within) if keep_within else None
        except ValueError as exc:
            raise UsageError(f"--keep-within: {exc}") from None
        override = RetentionPolicy(keep_within=within, **flags)
    if snapshot_ids and (override is not None or target is not None):
        raise UsageError("name snapshots by id, or give --target/--keep-* rules, not both")
    ctx, _ = context(json_output)
    outcome = forget_snapshots(ctx, target=target, override=override, dry_run=dry_run, and_prune=and_prune, wait=wait,
                               snapshot_ids=list(snapshot_ids or []) or None)
    if json_output:
        print_json({"dry_run": dry_run, "removed": outcome.removed, "prune": outcome.prune,
                    "decisions": [{"id": d.snapshot.id, "target": d.snapshot.target, "time": d.snapshot.time,
                                   "keep": d.keep, "reasons": d.reasons} for d in outcome.decisions]})
        return
    print_table(["id", "time", "target", "decision", "why"], (
        [d.snapshot.short_id, d.snapshot.time.isoformat()[:19].replace("T", " "), d.snapshot.target,
         "keep" if d.keep else ("would remove" if dry_run else "removed"), ", ".join(d.reasons)]
        for d in outcome.decisions))
    if outcome.prune is not None:
        _print_prune(outcome.prune)


@app.command()
def prune(
    dry_run: bool = typer.Option(False, "--dry-run", "-n"),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait while a backup holds the repository."),
    json_output: bool = JsonOption,
) -> None:
    """Delete data no snapshot uses (needs the repository to itself)."""
    from ..engine.maintenance import prune_repository

    ctx, _ = context(json_output)
    report = prune_repository(ctx, dry_run=dry_run, wait=wait)
    if json_output:
        print_json(report.as_dict())
    else:
        _print_prune(report)


def _print_prune(report) -> None:
    verb = "would free" if report.dry_run else "freed"
    typer.echo(f"{report.packs_deleted + report.unindexed_packs_deleted} pack(s) deleted, {report.packs_repacked} "
               f"repacked, {report.blobs_removed} unused blob(s); {verb} {human_bytes(report.bytes_freed)}")
    if report.packs_reindexed:
        typer.echo(f"{report.packs_reindexed} pack(s) that no index named hold used blobs: kept and indexed again")
    for warning in report.warnings:
        error_console.print(f"[yellow]warning[/]: {warning}")
    retained = report.retained
    if retained:
        counts: dict[str, int] = {}
        for kept in retained:
            counts[kept["kind"]] = counts.get(kept["kind"], 0) + 1
        typer.echo("kept under Object Lock: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
                   + f"; the last lock ends {max(k['until'] for k in retained)}")
        for kept in sorted(retained, key=lambda k: k["until"])[:10]:
            typer.echo(f"  {kept['kind']}/{kept['name'][:16]} until {kept['until']} ({kept['reason']})")
        if len(retained) > 10:
            typer.echo(f"  ... and {len(retained) - 10} more (--json lists them all)")


@app.command()
def stats(json_output: bool = JsonOption) -> None:
    """Repository size, deduplication and compression."""
    from ..engine.browse import repository_stats

    ctx, _ = context(json_output)
    data = repository_stats(ctx)
    if json_output:
        print_json(data)
        return
    for key, value in data.items():
        if key.endswith("bytes"):
            value = human_bytes(value)
        typer.echo(f"{key.replace('_', ' ')}: {value}")


@app.command()
def jobs(
    target: Optional[str] = typer.Option(None, "--target", "-t"),
    kind: Optional[str] = typer.Option(None, "--kind"),
    status: Optional[str] = typer.Option(None, "--status"),
    limit: int = typer.Option(20, "--limit"),
    job_id: Optional[int] = typer.Option(None, "--id", help="Show one job with its log."),
    json_output: bool = JsonOption,
) -> None:
    """The job history from the catalog."""
    ctx, _ = context(json_output)
    if job_id is not None:
        job = ctx.catalog.get_job(job_id)
        logs = ctx.catalog.job_logs(job_id)
        if json_output:
            print_json({"job": job, "logs": logs})
            return
        for key, value in dataclasses.asdict(job).items():
            typer.echo(f"{key}: {value}")
        skipped = (job.details or {}).get("skipped")
        if isinstance(skipped, dict) and skipped.get("count"):
            typer.echo(f"skipped: {skipped['count']} item(s)" + (", first listed:" if skipped.get("truncated") else ":"))
            for entry in skipped.get("items", []):
                reason, path, kind, detail = (_escaped(entry.get(key)) for key in ("reason", "path", "type", "detail"))
                typer.echo(f"  {reason}: {path} ({kind}): {detail}")
        for line in logs:
            typer.echo(f"  {line.time:%Y-%m-%d %H:%M:%S} {line.level:7} {printable(line.message)}")
        return
    records = ctx.catalog.list_jobs(target=target, kind=kind, status=status, limit=limit)
    if json_output:
        print_json(records)
        return
    print_table(["id", "kind", "target", "status", "started", "duration", "read", "added", "error"], (
        [r.id, r.kind, r.target, r.status, f"{r.started_at:%Y-%m-%d %H:%M:%S}" if r.started_at else "",
         f"{r.duration_seconds:.1f}s" if r.duration_seconds is not None else "", human_bytes(r.bytes_read),
         human_bytes(r.bytes_added), (r.error or "")[:60]] for r in records))


@app.command()
def unlock(remove_all: bool = typer.Option(False, "--remove-all", help="Also remove live locks (dangerous)."),
           json_output: bool = JsonOption) -> None:
    """Remove stale locks left by killed processes."""
    from ..engine.maintenance import unlock_repository

    ctx, _ = context(json_output)
    removed = unlock_repository(ctx, remove_all)
    if json_output:
        print_json([lock.__dict__ for lock in removed])
        return
    for lock in removed:
        typer.echo(f"removed lock: {lock.describe()}")
    typer.echo(f"{len(removed)} lock(s) removed")


# --- keys ---------------------------------------------------------------------


def _new_password(password_file: Optional[Path]) -> bytes:
    if password_file is not None:
        data = password_file.read_bytes()
        data = data[:-1] if data.endswith(b"\n") else data
    elif os.environ.get("SAFEHOLD_NEW_PASSWORD"):
        data = os.environ["SAFEHOLD_NEW_PASSWORD"].encode()
    elif sys.stdin.isatty():
        data = typer.prompt("new password", hide_input=True, confirmation_prompt=True).encode()
    else:
        raise UsageError("give the new password with --new-password-file FILE or SAFEHOLD_NEW_PASSWORD")
    if not data:
        raise UsageError("the new password is empty")
    return data


NewPasswordOption = typer.Option(None, "--new-password-file", help="File holding the new password.")


@key_app.command("add")
def key_add(new_password_file: Optional[Path] = NewPasswordOption) -> None:
    """Add a password (a new key file for the same master key)."""
    from ..engine.maintenance import add_key

    ctx, _ = context()
    typer.echo(f"added key {add_key(ctx, _new_password(new_password_file))[:8]}")


@key_app.command("list")
def key_list(json_output: bool = JsonOption) -> None:
    """List the key files; '*' marks the one the current password opens."""
    from ..engine.maintenance import list_keys

    ctx, _ = context(json_output)
    keys = list_keys(ctx)
    if json_output:
        print_json(keys)
        return
    print_table(["", "id", "created", "user", "host", "kdf"], (
        ["*" if k["current"] else "", k["id"][:8], k["created"], k["username"], k["hostname"],
         k["kdf"] or f"refused: {k.get('invalid')}"]
        for k in keys))


@key_app.command("remove")
def key_remove(key_id: str) -> None:
    """Remove a key file (never the last one, nor the one in use). Under S3 Object Lock it is only hidden."""
    from ..engine.maintenance import remove_key_reporting_lock

    ctx, _ = context()
    name, locked_until = remove_key_reporting_lock(ctx, key_id)
    typer.echo(f"removed key {name[:8]}")
    if locked_until:
        typer.echo(f"Object Lock keeps its stored version (hidden, unused, no longer extended) until {locked_until}; "
                   "the bucket's lifecycle rule expires it after that")


@key_app.command("passwd")
def key_passwd(new_password_file: Optional[Path] = NewPasswordOption) -> None:
    """Change the current password: add a key for the new one, remove the old key."""
    from ..engine.maintenance import change_password

    ctx, _ = context()
    new_key = change_password(ctx, _new_password(new_password_file))
    typer.echo(f"password changed; new key {new_key[:8]}; update the variable or file that holds it")


# --- configuration ------------------------------------------------------------


@config_app.command("check")
def config_check(json_output: bool = JsonOption) -> None:
    """Validate targets.yml and report every problem at once."""
    from ..config import load_config

    config = load_config(state.config_path)
    if json_output:
        print_json({"ok": True, "path": str(config.path), "targets": [t.name for t in config.targets]})
    else:
        typer.echo(f"{config.path}: ok, {len(config.targets)} target(s)")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of targets.yml."""
    from ..config import Config

    print_json(Config.model_json_schema())


@catalog_app.command("rebuild")
def catalog_rebuild(json_output: bool = JsonOption) -> None:
    """Recreate the snapshot cache from the repository (after losing the control-plane host)."""
    from ..engine.browse import rebuild_catalog

    ctx, _ = context(json_output)
    result = rebuild_catalog(ctx)
    if json_output:
        print_json(result)
    else:
        typer.echo(f"catalog holds {result['snapshots']} snapshot(s) of repository {result['repository_id'][:8]}")


# --- entry point ----------------------------------------------------------------


def _print_error(exc: SafeholdError, prefix: str = "") -> None:
    from rich.markup import escape

    # Messages carry user data (paths, keys in brackets): escape them so Rich prints them verbatim.
    error_console.print(f"[bold red]error[/]: {escape(prefix + exc.message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        error_console.print(f"[bold]hint[/]: {escape(exc.hint)}", highlight=False, soft_wrap=True)


# Commands of the larger features live in their own modules, each with a
# ``register(app)`` that adds its commands; importing them is cheap because
# they, too, import the engine only inside each command. They import the app
# and the shared options from ``app``, never from this module.
COMMAND_MODULES: list[str] = [
    "safehold.cli.control",
    "safehold.cli.hyperv",
    "safehold.cli.libvirt",
    "safehold.cli.postgres",
    "safehold.cli.ebs",
    "safehold.cli.vmware",
    "safehold.cli.immutability",
    "safehold.cli.server",
    "safehold.cli.repair",
    "safehold.cli.drill",
    "safehold.cli.copy",
    "safehold.cli.verdicts",
    "safehold.cli.workers",
]


def _register_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_command_modules()


class _WarningLine(logging.Handler):
    """Warnings of ``safehold.files`` as one 'warning: ...' line on stderr, unless logging is
    configured (``safehold serve``, the scheduler), whose own handlers then carry them."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        from rich.markup import escape

        error_console.print(f"[yellow]warning[/]: {escape(record.getMessage())}", highlight=False, soft_wrap=True)


def run(argv: list[str] | None = None) -> None:
    # Typer handles usage errors itself (exit 2) and exits through SystemExit;
    # everything else that escapes a command is ours to explain.
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        # Answered before Typer builds the command tree (which imports pydantic for its
        # parameter adapters): the version is asked by scripts and monitoring, often.
        from .. import __version__

        print(f"safehold {__version__}")
        return
    files_log = logging.getLogger("safehold.files")
    if not any(isinstance(handler, _WarningLine) for handler in files_log.handlers):
        files_log.addHandler(_WarningLine())
    try:
        app(args=argv)
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    except SafeholdError as exc:
        if exc.bug or os.environ.get("SAFEHOLD_DEBUG"):
            traceback.print_exc()
        _print_error(exc)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # The medium failed under us (permissions, a vanished mount, a full disk
        # outside the repository): explain it in one line, not a traceback.
        from ..errors import from_os_error

        if os.environ.get("SAFEHOLD_DEBUG"):
            traceback.print_exc()
        error = from_os_error(exc, exc.filename or "I/O")
        _print_error(error)
        sys.exit(error.exit_code)
    except Exception as exc:  # a bug: show everything and ask for a report
        traceback.print_exc()
        error_console.print(f"[bold red]internal error[/]: {exc!r}\nthis is a bug in safehold; please report it "
                            "with the traceback above")
        sys.exit(70)
    sys.exit(0)


if __name__ == "__main__":
    run()
