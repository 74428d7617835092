"""File snapshots restored to another host over SFTP (``safehold restore ID --to ssh://user@host/path``).

The snapshot is hostile input here as in a local restore (``restore.directory``), but SFTP has
no ``openat``: every request names a path, resolved by the server from its root. So the rules
are kept by path, one component at a time:

- names are single components (``split_path``: never empty, ``.``, ``..``, or with '/' or NUL);
- a directory is used only once ``lstat`` showed a real directory there (not a link), or when
  this restore made it itself (``mkdir``, which fails on anything already at the name);
- files are created with ``CREAT|EXCL`` (OpenSSH's server passes ``O_EXCL`` to ``open``, which
  refuses an existing name, a symlink included), and their metadata is set on the open handle;
  with ``overwrite``, what is at a file's name is ``lstat``-ed and, unless it is a directory,
  removed first (``remove`` unlinks a link, never its target);
- directory metadata uses ``lsetstat@openssh.com`` when the server offers it (it does not follow
  a final symlink); symlinks from the snapshot are made last, so no later request passes one;
- device nodes, FIFOs and sockets cannot be made over SFTP: they are listed, not restored;
  setuid/setgid bits are removed unless ``special_files``.

What SFTP cannot guarantee: between our ``lstat`` of a directory and the request that uses it,
a user *on the remote host* who can write to the destination could swap the directory for a
symlink, and the server would follow it (there is no ``O_NOFOLLOW`` for the components of a
path). Restore over SSH into a folder only the login account (or root) can write to; against
the snapshot itself, which is what an attacker holding the repository password controls, the
rules above hold.
"""

from __future__ import annotations

import errno
import posixpath
import stat
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel

from ..errors import DestinationError, IntegrityError, UsageError
from ..platforms.ssh import SshSession, SshSettings
from ..text import printable
from .base import BlobReader, Progress, RestoreReport, SnapshotInfo
from .directory import PRIVILEGE_BITS, _malformed, selected, split_path

#: Writes of one file kept in flight (each up to a chunk, about 1 MiB), and files written at once.
WRITES_IN_FLIGHT = 4
FILES_IN_FLIGHT = 32


def parse_url(url: str) -> tuple[str, str | None, int | None, str]:
    """ssh://[user@]host[:port]/absolute/path -> (host, user, port, path). UsageError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname or not parts.path.startswith("/"):
        raise UsageError(f"{url!r} is not an SSH destination; expected ssh://user@host/absolute/path")
    path = unquote(parts.path)
    if any(part in (".", "..") for part in path.split("/")) or "\0" in path:
        raise UsageError(f"{url!r}: the path must not contain '.' or '..' components")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{url!r}: the port is not a number from 1 to 65535") from None
    return parts.hostname, unquote(parts.username) if parts.username else None, port, posixpath.normpath(path)


class SshDestination:
    """See the module docstring. ``settings`` says how to reach and trust the host (the engine takes
    them from an ssh target of the configuration for the same host, or the user's defaults)."""

    def __init__(self, options: BaseModel, *, settings: SshSettings, path: str) -> None:
        self.options: Any = options
        self.settings = settings
        self.path = path.rstrip("/") or "/"
        self.label = f"ssh://{settings.user}@{settings.host}:{settings.port}{self.path}"
        self.session: SshSession | None = None
        self._asyncssh: Any = None
        self.created: list[tuple[str, bytes]] = []  # ("dir"|"file"|"link", path) in creation order
        self._verified: set[bytes] = set()  # directories lstat-ed as real, or made by us
        self._lock = threading.Lock()  # the report and ``created``, shared with the file writers
        self._root_made = False

    # -- the connection --------------------------------------------------------------------
    def _connect(self) -> SshSession:
        if self.session is None:
            self.session = SshSession(self.settings)
            import asyncssh  # noqa: PLC0415 - present once SshSession connected

            self._asyncssh = asyncssh
        return self.session

    def _call(self, awaitable: Any, path: bytes) -> Any:
        assert self.session is not None
        return self.session.call(awaitable, path)

    def _lstat(self, path: bytes) -> Any | None:
        assert self.session is not None
        try:
            return self._call(self.session.sftp.lstat(path), path)
        except FileNotFoundError:
            return None

    def _fail(self, path: bytes, detail: str) -> DestinationError:
        return DestinationError(destination=f"{self.label} ({printable(path)})", detail=detail)

    # -- the protocol ------------------------------------------------------------------------
    def plan(self, snapshot: SnapshotInfo, items: Any) -> Any:
        if snapshot.kind != "files":
            raise UsageError(f"snapshot {snapshot.short_id} holds {snapshot.kind}, not files: "
                             "only file snapshots can be restored over SSH")
        self._connect()
        root = self.path.encode()
        attrs = self._lstat(root)
        if attrs is not None:
            mode = attrs.permissions or 0
            if not stat.S_ISDIR(mode):
                raise DestinationError(destination=self.label, detail="exists and is not a directory "
                                       "(a symlink is not followed)")
            if not self.options.overwrite and self._listing(root):
                raise DestinationError(destination=self.label, detail="directory is not empty")
        else:
            parent = posixpath.dirname(self.path).encode()
            parent_attrs = self._lstat(parent)
            if parent_attrs is None or not stat.S_ISDIR(parent_attrs.permissions or 0):
                raise DestinationError(destination=self.label,
                                       detail=f"its parent {printable(parent)} is not an existing directory")
        return items

    def _listing(self, path: bytes) -> list[bytes]:
        assert self.session is not None

        async def names() -> list[bytes]:
            return [n.filename async for n in self.session.sftp.scandir(path) if n.filename not in (b".", b"..")]
        return self._call(names(), path)

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        session = self._connect()
        report = RestoreReport(details={"destination": self.label})
        root = self.path.encode()
        if self._lstat(root) is None:
            self._mkdir(root)
            self._root_made = True
        self._verified.add(root)
        includes = [i.encode().strip(b"/") if isinstance(i, str) else i for i in self.options.includes]
        directories: list[tuple[bytes, dict]] = []
        symlinks: list[tuple[bytes, dict]] = []
        hardlinks: list[tuple[bytes, dict]] = []
        # Files are written by a pool, each file's requests pipelined: over a link with 20 ms round
        # trips one file after another costs ~5 round trips each (measured, 3006 files, 240 MiB:
        # 292 s one at a time, 43 s with 8 in flight, 24 s with 32). Folders are made here, before their files are handed over; only the pool's
        # results and the report are shared, under the lock.
        self._lock = threading.Lock()
        files: set[bytes] = set()
        running: deque[Future] = deque()
        with ThreadPoolExecutor(FILES_IN_FLIGHT, thread_name_prefix="safehold-ssh-restore") as pool:
            try:
                self._walk_items(plan, includes, report, progress, reader, pool, running, files,
                                 directories, symlinks, hardlinks)
                while running:
                    running.popleft().result()
            finally:
                for future in running:
                    future.cancel()
        progress(report.bytes_written, "")
        self._finish(session, report, directories, symlinks, hardlinks)
        return report

    def _walk_items(self, plan: Any, includes: list[bytes], report: RestoreReport, progress: Progress,
                    reader: BlobReader, pool: ThreadPoolExecutor, running: deque, files: set[bytes],
                    directories: list, symlinks: list, hardlinks: list) -> None:
        for item in plan:
            problem = _malformed(item)
            path = item.get("path") if isinstance(item, dict) else None
            if problem:
                report.damaged.append(f"{printable(path or b'?')}: {problem}")
                continue
            if not selected(path, includes):
                continue
            parts = split_path(path)
            if parts is None:
                report.damaged.append(f"{printable(path)}: unsafe path")
                continue
            kind = item["type"]
            try:
                parent = self._parent(parts)
                remote = parent + b"/" + parts[-1]
                if kind == "dir":
                    self._directory(remote)
                    directories.append((remote, item))
                elif kind == "file":
                    if remote in files:
                        raise _Refused("the snapshot holds this file twice")
                    files.add(remote)
                    running.append(pool.submit(self._file, reader, remote, item, report))
                    while len(running) > 2 * FILES_IN_FLIGHT or (running and running[0].done()):
                        running.popleft().result()  # a worker's error stops the restore here
                    with self._lock:
                        done = report.bytes_written
                    progress(done, printable(item["path"]))
                elif kind == "symlink":
                    symlinks.append((remote, item))
                elif kind == "hardlink":
                    hardlinks.append((remote, item))
                else:
                    report.special.append(f"{printable(path)}: a {kind}, which SFTP cannot create (skipped)")
            except _Refused as refused:
                with self._lock:
                    report.damaged.append(f"{printable(path)}: {refused}")

    def _finish(self, session: SshSession, report: RestoreReport, directories: list, symlinks: list,
                hardlinks: list) -> None:
        for remote, item in hardlinks:
            self._hardlink(remote, item, report)
        for remote, item in symlinks:
            try:
                self._clear(remote)
                self._call(session.sftp.symlink(item["target"], remote), remote)
                self.created.append(("link", remote))
                report.files += 1
            except _Refused as refused:
                report.damaged.append(f"{printable(item['path'])}: {refused}")
            except OSError as exc:
                raise self._fail(remote, exc.strerror or str(exc)) from None
        for remote, item in reversed(directories):  # deepest first, after their contents
            self._set_directory_metadata(remote, item)

    def commit(self) -> None:
        # Written in place, as a local directory restore: nothing to rename.
        self.created.clear()
        self._close()

    def rollback(self) -> None:
        if self.session is None:
            self.created.clear()
            return
        try:
            sftp = self.session.sftp
            for kind, path in reversed(self.created):
                try:
                    if kind == "dir":
                        self._call(sftp.rmdir(path), path)
                    else:
                        self._call(sftp.remove(path), path)
                except OSError:
                    pass  # gone already, or not empty because something else wrote there
            if self._root_made:
                try:
                    self._call(sftp.rmdir(self.path.encode()), self.path)
                except OSError:
                    pass
            self.created.clear()
            self._root_made = False
        finally:
            self._close()

    def _close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    # -- the pieces ----------------------------------------------------------------------------
    def _mkdir(self, remote: bytes) -> None:
        assert self.session is not None
        attrs = self._asyncssh.SFTPAttrs(permissions=0o700)  # 0700 until the stored mode, at the end
        try:
            self._call(self.session.sftp.mkdir(remote, attrs), remote)
        except OSError as exc:
            raise self._fail(remote, exc.strerror or str(exc)) from None
        with self._lock:
            self.created.append(("dir", remote))
        self._verified.add(remote)

    def _parent(self, parts: tuple[bytes, ...]) -> bytes:
        """The remote parent of ``parts``, every component below the root checked to be a real
        directory (lstat) or made by this restore; missing ones are made."""
        current = self.path.encode()
        for part in parts[:-1]:
            current = current + b"/" + part
            if current in self._verified:
                continue
            attrs = self._lstat(current)
            if attrs is None:
                self._mkdir(current)
            elif stat.S_ISDIR(attrs.permissions or 0):
                self._verified.add(current)
            else:
                raise _Refused(f"{printable(current)} is not a directory (a symlink is never followed)")
        return current

    def _directory(self, remote: bytes) -> None:
        if remote in self._verified:
            return
        attrs = self._lstat(remote)
        if attrs is None:
            self._mkdir(remote)
        elif stat.S_ISDIR(attrs.permissions or 0):
            self._verified.add(remote)
        else:
            raise _Refused("something other than a directory is at its name")

    def _clear(self, remote: bytes) -> None:
        """Make room at a file's or link's name: nothing there, or (with overwrite) a non-directory,
        which is unlinked (never followed)."""
        assert self.session is not None
        attrs = self._lstat(remote)
        if attrs is None:
            return
        if not self.options.overwrite or stat.S_ISDIR(attrs.permissions or 0):
            raise _Refused("the name is taken" + ("" if self.options.overwrite else " (restore with --overwrite)"))
        self._call(self.session.sftp.remove(remote), remote)

    def _mode(self, item: dict, report: RestoreReport) -> int:
        mode = stat.S_IMODE(item["mode"])
        if mode & PRIVILEGE_BITS and not self.options.special_files:
            mode &= ~PRIVILEGE_BITS  # a restore must not hand out a setuid binary unasked
            report.special.append(f"{printable(item['path'])}: setuid/setgid bits removed (restore with --special-files)")
        return mode

    def _attrs(self, item: dict, mode: int, owner: bool) -> Any:
        seconds = item["mtime"] // 1_000_000_000
        options: dict[str, Any] = dict(permissions=mode, atime=seconds, mtime=seconds)
        if owner:
            options.update(uid=item.get("uid", 0), gid=item.get("gid", 0))
        return self._asyncssh.SFTPAttrs(**options)

    def _file(self, reader: BlobReader, remote: bytes, item: dict, report: RestoreReport) -> None:
        """One file, on a pool thread: created exclusively, written with requests in flight, its
        metadata set on the handle."""
        assert self.session is not None
        session, asyncssh = self.session, self._asyncssh
        try:
            self._clear(remote)
        except _Refused as refused:
            with self._lock:
                report.damaged.append(f"{printable(item['path'])}: {refused}")
            return
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        try:
            handle = self._call(session.sftp.open(remote, flags, asyncssh.SFTPAttrs(permissions=0o600), encoding=None),
                                remote)
        except OSError as exc:
            raise self._fail(remote, exc.strerror or str(exc)) from None
        with self._lock:
            self.created.append(("file", remote))
        chunks = item["chunks"]
        offset = 0
        pending: deque[Future] = deque()
        try:
            try:
                for index in range(0, len(chunks), 32):
                    data = reader.read_blob(chunks[index:index + 32])
                    pending.append(session.submit(handle.write(data, offset)))
                    offset += len(data)
                    while len(pending) > WRITES_IN_FLIGHT:
                        session.result(pending.popleft(), remote)
                    with self._lock:
                        report.bytes_written += len(data)
                while pending:
                    session.result(pending.popleft(), remote)
            except IntegrityError:
                # Never a file with a gap: remove it, name it, go on with the others.
                for future in pending:
                    future.add_done_callback(lambda f: f.exception())
                self._call(handle.close(), remote)
                handle = None
                self._call(session.sftp.remove(remote), remote)
                with self._lock:
                    report.damaged.append(f"{printable(item['path'])}: damaged data")
                return
            with self._lock:
                mode = self._mode(item, report)
            try:  # on the handle: never by a path someone could have swapped
                self._call(handle.setstat(self._attrs(item, mode, owner=True)), remote)
            except PermissionError:
                self._call(handle.setstat(self._attrs(item, mode, owner=False)), remote)
            with self._lock:
                report.files += 1
        except OSError as exc:
            raise self._fail(remote, exc.strerror or str(exc)) from None
        finally:
            if handle is not None:
                session.submit(handle.close()).add_done_callback(lambda f: f.exception())

    def _hardlink(self, remote: bytes, item: dict, report: RestoreReport) -> None:
        assert self.session is not None
        first = split_path(item["target"])
        target = self.path.encode() + b"/" + b"/".join(first) if first else None
        if target is None or ("file", target) not in self.created:
            report.damaged.append(f"{printable(item['path'])}: a hard link to a file this restore did not write")
            return
        try:
            self._parent(split_path(item["path"]) or (b"",))
            self._clear(remote)
            self._call(self.session.sftp.link(target, remote), remote)
            self.created.append(("file", remote))
            report.files += 1
        except _Refused as refused:
            report.damaged.append(f"{printable(item['path'])}: {refused}")
        except OSError as exc:
            report.warnings.append(f"{printable(item['path'])}: hard link not made ({exc.strerror or exc})")

    def _set_directory_metadata(self, remote: bytes, item: dict) -> None:
        assert self.session is not None
        report = RestoreReport()
        mode = self._mode(item, report)
        follow = False  # lsetstat@openssh.com: a final symlink is not followed
        for owner in (True, False):
            try:
                self._call(self.session.sftp.setstat(remote, self._attrs(item, mode, owner), follow_symlinks=follow),
                           remote)
                return
            except PermissionError:
                continue
            except OSError as exc:
                if exc.errno == errno.EOPNOTSUPP and not follow:
                    # A server without lsetstat: setstat by path (the directory was lstat-ed or made by
                    # us; see the module docstring for what a concurrent remote user could do).
                    follow = True
                    try:
                        self._call(self.session.sftp.setstat(remote, self._attrs(item, mode, owner),
                                                             follow_symlinks=True), remote)
                        return
                    except PermissionError:
                        continue
                    except OSError as again:
                        raise self._fail(remote, again.strerror or str(again)) from None
                raise self._fail(remote, exc.strerror or str(exc)) from None


class _Refused(Exception):
    """One item that cannot be restored safely; named in the report, the restore goes on."""
