"""Restores to another host over SFTP (``--to ssh://user@host/path``) against the loopback sshd:
the same tree comes back, and a hostile snapshot or a booby-trapped destination writes nothing
outside the destination and follows no link it did not make."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile_support import directory, file, hardlink, symlink, write_snapshot

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.restore import restore_snapshot

from ssh_support import make_tree, tree_state


def url(server, path: Path) -> str:
    return f"ssh://{server.user}@{server.host}:{server.port}{path}"


def test_a_backup_restored_over_ssh_is_the_same_tree(tmp_path, safehold, ssh_server):
    data = make_tree(tmp_path / "host")
    (data / "app" / "run.sh").write_text("#!/bin/sh\n")
    (data / "app" / "run.sh").chmod(0o4755)  # setuid: removed unless asked for
    context = safehold([data])
    result = backup_target(context, "host")
    out = tmp_path / "restored"
    outcome = restore_snapshot(context, result.snapshot_id, url(ssh_server, out))
    assert outcome.files == 9 and outcome.to == "ssh"
    expected = tree_state(data)
    expected[b"app/run.sh"] = ("file", 0o755, *expected[b"app/run.sh"][2:])
    assert tree_state(out / "etc") == expected
    assert any("setuid/setgid bits removed" in line for line in outcome.special)

    # A second restore into the same, now non-empty, directory is refused before writing ...
    before = tree_state(out)
    with pytest.raises(errors.DestinationError, match="directory is not empty"):
        restore_snapshot(context, result.snapshot_id, url(ssh_server, out))
    assert tree_state(out) == before
    # ... and with overwrite it replaces what is there.
    (out / "etc" / "app" / "main.conf").write_text("changed")
    restore_snapshot(context, result.snapshot_id, url(ssh_server, out), overwrite=True)
    assert (out / "etc" / "app" / "main.conf").read_text() == "listen 80\n"


def test_a_hostile_snapshot_writes_nothing_outside_over_ssh(tmp_path, safehold, ssh_server):
    context = safehold([tmp_path])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    with context.locked() as repository:
        snapshot = write_snapshot(repository, [
            file(b"../escape", b"x"),
            file(b"a/../../escape2", b"x"),
            directory(b"d"),
            symlink(b"d/link", str(outside)),       # made last: never used by a later write
            file(b"d/link/planted", b"x"),          # would go through the link if it existed first
            symlink(b"trap", str(outside / "victim")),
            hardlink(b"h", b"../../etc/passwd"),
            file(b"ok", b"fine"),
        ], target="host")
    out = tmp_path / "restored"
    with pytest.raises(errors.RestoreIncomplete) as caught:
        restore_snapshot(context, snapshot.id, url(ssh_server, out))
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "keep"
    assert not (tmp_path / "escape").exists() and not (tmp_path / "escape2").exists()
    assert (out / "ok").read_text() == "fine"
    assert os.readlink(out / "trap") == str(outside / "victim")  # made as a link, not written through
    damaged = " ".join(caught.value.fields["outcome"].damaged)
    assert "unsafe path" in damaged and "hard link" in damaged


def test_links_planted_in_the_destination_are_not_followed(tmp_path, safehold, ssh_server):
    context = safehold([tmp_path])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    out = tmp_path / "restored"
    out.mkdir()
    (out / "d").symlink_to(outside)                  # a folder of the snapshot is a link to elsewhere
    (out / "f").symlink_to(outside / "victim")       # a file of the snapshot is a link to elsewhere
    with context.locked() as repository:
        snapshot = write_snapshot(repository, [directory(b"d"), file(b"d/new", b"x"), file(b"f", b"overwritten")],
                                  target="host")
    with pytest.raises(errors.RestoreIncomplete) as caught:
        restore_snapshot(context, snapshot.id, url(ssh_server, out), overwrite=True)
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "keep"
    # The planted file link was unlinked (never followed) and the file made in its place.
    assert not (out / "f").is_symlink() and (out / "f").read_text() == "overwritten"
    assert "d" in " ".join(caught.value.fields["outcome"].damaged)

    # The destination itself a link: refused before anything is written.
    (tmp_path / "link-root").symlink_to(outside)
    with pytest.raises(errors.DestinationError, match="not a directory"):
        restore_snapshot(context, snapshot.id, url(ssh_server, tmp_path / "link-root"), overwrite=True)
    assert sorted(os.listdir(outside)) == ["victim"]


def test_a_changed_host_key_refuses_the_restore(tmp_path, safehold, ssh_server):
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {tmp_path / 'other'}")
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    forged = tmp_path / "forged"
    forged.write_text(f"[{ssh_server.host}]:{ssh_server.port} {kind} {blob}\n")
    # The restore takes the host's keys and trusted host key from the ssh target of the same host.
    context = safehold([tmp_path], known_hosts=str(forged))
    with context.locked() as repository:
        snapshot = write_snapshot(repository, [file(b"f", b"x")], target="host")
    with pytest.raises(errors.SshHostKeyRejected, match="does not match"):
        restore_snapshot(context, snapshot.id, url(ssh_server, tmp_path / "r"))
    assert not (tmp_path / "r").exists()
