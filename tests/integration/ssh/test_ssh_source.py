"""The ssh source against a real sshd on loopback (Debian's openssh-server): full and incremental
backups, the host key check, a connection cut mid-backup, before/after commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.restore import restore_snapshot

from ssh_support import make_tree, tree_state


def test_full_backup_over_sftp_restores_the_same_tree(tmp_path, safehold):
    data = make_tree(tmp_path / "host")
    context = safehold([data], exclude=["cache"])
    result = backup_target(context, "host")
    summary = result.summary
    assert summary["files"] == 6 and summary["files_new"] == 6
    assert summary["bytes_read"] == sum(p.stat().st_size for p in data.rglob("*")
                                         if p.is_file() and not p.is_symlink() and "cache" not in p.parts)
    restored = tmp_path / "restored"
    restore_snapshot(context, result.snapshot_id, str(restored))
    expected = {path: state for path, state in tree_state(data).items() if not path.startswith(b"cache")}
    assert tree_state(restored / "etc") == expected


def test_incremental_reads_only_changed_files(tmp_path, safehold, ssh_server):
    data = make_tree(tmp_path / "host")
    context = safehold([data])
    first = backup_target(context, "host")
    opened_before = len(ssh_server.opened())
    (data / "app" / "main.conf").write_text("listen 8080\n")  # new size, new mtime
    (data / "new.txt").write_text("new")
    second = backup_target(context, "host")
    opened = ssh_server.opened()[opened_before:]
    # Only the changed and the new file were opened on the host; the 9 MiB file was not read again.
    assert sorted(os.path.basename(p) for p in opened) == ["main.conf", "new.txt"]
    summary = second.summary
    assert (summary["files_changed"], summary["files_new"], summary["files_unchanged"]) == (1, 1, 6)
    assert summary["bytes_read"] == len("listen 8080\n") + 3
    assert second.parent_id == first.snapshot_id
    restored = tmp_path / "restored"
    restore_snapshot(context, second.snapshot_id, str(restored))
    assert tree_state(restored / "etc") == tree_state(data)


def _other_key(tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    return (tmp_path / "other.pub").read_text().split(" ")[0:2]


def test_a_changed_host_key_is_refused(tmp_path, safehold, ssh_server):
    data = make_tree(tmp_path / "host")
    kind, blob = _other_key(tmp_path)
    forged = tmp_path / "known_hosts"
    forged.write_text(f"[{ssh_server.host}]:{ssh_server.port} {kind} {blob}\n")
    context = safehold([data], known_hosts=str(forged))
    with pytest.raises(errors.SshHostKeyRejected) as caught:
        backup_target(context, "host")
    assert caught.value.exit_code == 64
    assert str(forged) in str(caught.value) and "does not match" in str(caught.value)
    assert "never accepted automatically" in caught.value.hint
    with context.locked(purpose="look") as repository:
        assert repository.list_snapshots("host") == []

    # A pinned key that is not the host's, and a known_hosts without the host: refused alike.
    pinned = safehold([data], known_hosts=None, host_key=f"{kind} {blob}")
    with pytest.raises(errors.SshHostKeyRejected, match="pinned host_key"):
        backup_target(pinned, "host")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(errors.SshHostKeyRejected):
        backup_target(safehold([data], known_hosts=str(empty)), "host")


def test_the_right_pinned_key_is_accepted(tmp_path, safehold, ssh_server):
    data = make_tree(tmp_path / "host")
    line = Path(ssh_server.known_hosts).read_text().split()
    context = safehold([data], known_hosts=None, host_key=f"{line[1]} {line[2]}")
    assert backup_target(context, "host").summary["files"] == 7


def test_connection_dropped_mid_backup_writes_no_snapshot(tmp_path, safehold, ssh_server):
    data = make_tree(tmp_path / "host")
    # More files than the archiver prefetches ahead (64), so reads are still to come at the cut.
    for index in range(150):
        (data / f"f{index:03}.bin").write_bytes(os.urandom(64 * 1024))
    context = safehold([data])
    cut = []

    def progress(event: dict) -> None:
        if event.get("files_done", 0) >= 10 and not cut:
            cut.append(ssh_server.cut_connections())

    context.progress = progress
    with pytest.raises(errors.SshConnectionFailed) as caught:
        backup_target(context, "host")
    assert cut and cut[0] > 0
    assert caught.value.exit_code == 65 and "lost" in str(caught.value)
    with context.locked(purpose="look") as repository:
        assert repository.list_snapshots("host") == []
    context.progress = lambda event: None
    result = backup_target(context, "host")
    assert result.summary["files"] == 157 and result.parent_id is None
    restored = tmp_path / "restored"
    restore_snapshot(context, result.snapshot_id, str(restored))
    assert tree_state(restored / "etc") == tree_state(data)


def test_before_and_after_run_on_the_host_and_after_always_runs(tmp_path, safehold):
    data = make_tree(tmp_path / "host")
    marker = tmp_path / "frozen"
    log = tmp_path / "commands.log"
    context = safehold([data], before=f"touch {marker} && echo before >> {log}",
                       after=f"rm {marker} && echo after >> {log}")
    result = backup_target(context, "host")
    assert log.read_text() == "before\nafter\n" and not marker.exists()
    lines = [record.message for record in context.catalog.job_logs(result.job_id)]
    assert any("ran before command" in line for line in lines)
    assert any("ran after command" in line for line in lines)

    # before fails: no snapshot, the error names the command's output, and after still runs.
    failing = safehold([data], before=f"echo no snapshot volume >&2; exit 3", after=f"echo after >> {log}")
    with pytest.raises(errors.SshCommandFailed, match="no snapshot volume") as caught:
        backup_target(failing, "host")
    assert caught.value.exit_code == 66 and "exit status 3" in str(caught.value)
    assert log.read_text() == "before\nafter\nafter\n"


def test_files_the_account_cannot_read_are_skipped_and_reported(tmp_path, safehold, ssh_server):
    if not ssh_server.unprivileged_user:
        pytest.skip("the test sshd offers no unprivileged account")
    # Below a folder the unprivileged account can reach (pytest's tmp_path is private to root).
    base = Path(tempfile.mkdtemp(prefix="safehold-ssh-unreadable-"))
    try:
        base.chmod(0o755)
        data = base / "data"
        data.mkdir(mode=0o755)
        (data / "open.txt").write_text("readable")
        (data / "open.txt").chmod(0o644)
        (data / "secret.txt").write_text("not for the backup account")
        (data / "secret.txt").chmod(0o600)
        (data / "private").mkdir(mode=0o700)
        (data / "private" / "inside").write_text("x")
        context = safehold([data], user=ssh_server.unprivileged_user)
        result = backup_target(context, "host")
        skipped = {item["path"]: item for item in result.summary["skipped"]["items"]}
        assert skipped["data/secret.txt"]["reason"] == "unreadable", skipped
        assert "ermission denied" in skipped["data/secret.txt"]["detail"]
        assert skipped["data/private"]["type"] == "dir" and "cannot be listed" in skipped["data/private"]["detail"]
        assert result.status == "partial"
        restored = tmp_path / "restored"
        restore_snapshot(context, result.snapshot_id, str(restored))
        assert (restored / "data" / "open.txt").read_text() == "readable"
        assert not (restored / "data" / "secret.txt").exists()
        lines = [record.message for record in context.catalog.job_logs(result.job_id)]
        assert any("secret.txt" in line for line in lines)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_host_that_does_not_answer_is_a_clear_error(tmp_path, safehold, ssh_server):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = safehold([tmp_path], port=port)
    with pytest.raises(errors.SshConnectionFailed, match="cannot connect") as caught:
        backup_target(context, "host")
    assert caught.value.exit_code == 65
    unknown = safehold([tmp_path], host="no-such-host.invalid")
    with pytest.raises(errors.SshConnectionFailed, match="cannot connect"):
        backup_target(unknown, "host")


def test_an_endless_folder_is_cut_with_a_warning(tmp_path, ssh_server):
    from safehold.sources.ssh import MAX_DEPTH, SshSource

    deep = tmp_path / "r"
    os.makedirs(os.path.join(deep, *["a"] * (MAX_DEPTH + 5)))
    source = SshSource(host=ssh_server.host, port=ssh_server.port, user=ssh_server.user, paths=[str(deep)],
                       identity_file=ssh_server.key, known_hosts=ssh_server.known_hosts)
    with source.open(None) as view:
        paths = [item.path for item in view.items()]
    assert len(paths) == MAX_DEPTH and any("folders deep" in item["detail"] for item in view.skipped.items)
