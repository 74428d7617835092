"""Linux hosts over SSH: walks and reads files over SFTP, with nothing installed on the host.

The items are those of the local ``files`` source (``safehold.items.FileItem``), in the same
order (depth first, names sorted as bytes) and with the same exclude patterns, so the
archiver's incremental rule applies unchanged: a file whose path, size and mtime match the
parent snapshot is not read again.

What SFTP tells and what it does not. OpenSSH serves SFTP version 3, whose ``lstat`` gives
type, mode, uid, gid, size and atime/mtime in whole seconds; it has no ctime, inode or link
count, and no extended attributes. So: owners' names come from the listing's ``ls -l`` line,
hard links are stored as separate files (their contents deduplicate), xattrs are not read,
and the incremental check is on (path, size, mtime to the second): a file rewritten at the
same size within the second of the previous backup's walk is not seen until it changes again.
The job log says so (info) once per run.

Speed. One SSH connection, an asyncio loop in a private thread (``platforms.ssh``): the listings
of sibling folders and the symlink targets are asked for together, ahead of the walk, and each
file is read in 4 MiB windows that asyncssh splits into up to 128 requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import stat
import time
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import SourceError, SshCommandFailed, SshConnectionFailed
from ..text import printable
from ..platforms.ssh import RemoteFile, SshSession, SshSettings, prefetch
from ..items import skip_reason
from .base import FileItem, View
from .files import Patterns

log = logging.getLogger(__name__)

BATCH = 256  # items handed from the walk's loop to the archiver's thread at once
QUEUE_BATCHES = 64  # batches the walk may run ahead
LISTINGS_IN_FLIGHT = 32
MAX_DEPTH = 300  # folders below a root; each level is a frame of the walk

LIMITS_NOTE = (
    "ssh: SFTP (version 3) reports no ctime, inode or link count: unchanged files are recognised by "
    "path, size and mtime to the second; hard links are stored as separate files; xattrs are not read"
)


class SshSource:
    def __init__(self, host: str, user: str, paths: list[str], port: int = 22, exclude: list[str] | None = None,
                 identity_file: str | None = None, identity_env: str | None = None,
                 known_hosts: str | None = None, host_key: str | None = None,
                 before: str | None = None, after: str | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.settings = SshSettings(host=host, user=user, port=port, identity_file=identity_file,
                                    identity_env=identity_env, known_hosts=known_hosts, host_key=host_key)
        self.paths = [posixpath.normpath(p) for p in paths]
        self.patterns = Patterns(exclude or [], [])
        self.before = before
        self.after = after
        self.environ = environ
        names = [self._name(p) for p in self.paths]
        if len(set(names)) != len(names):
            raise SourceError(source=", ".join(self.paths),
                              detail="two paths share a base name; back them up as separate targets")
        # What the last view did, for tests and the job log: files opened for reading, commands run.
        self.files_opened = 0
        self.commands: list[str] = []
        self._prefetched: dict[bytes, Any] = {}  # path -> Future of (handle, first bytes)

    @staticmethod
    def _name(path: str) -> bytes:
        return (posixpath.basename(path.rstrip("/")) or "root").encode()

    def _url(self, path: str) -> str:
        return f"ssh://{self.settings.user}@{self.settings.host}:{self.settings.port}{path}"

    @contextmanager
    def open(self, parent_token: dict | None = None) -> Iterator[View]:
        session = SshSession(self.settings, self.environ)
        producer: list[Any] = []
        failed = False
        self.commands = []
        notes: list[str] = [LIMITS_NOTE]
        try:
            if self.before:
                self._run(session, "before", self.before, notes)
            roots = []
            for path in self.paths:
                try:
                    attrs = session.call(session.sftp.lstat(path.encode()), path)
                except OSError as exc:
                    raise SourceError(source=self._url(path), detail=exc.strerror or str(exc)) from None
                roots.append((path, attrs))
            view = View(kind="files", paths=[self._url(p) for p in self.paths],
                        items=lambda: self._items(session, roots, view, producer),
                        incremental="mtime", notes=notes)
            yield view
        except BaseException:
            failed = True
            raise
        finally:
            for future in producer:
                future.cancel()
            # Files prefetched but never opened (the archiver stopped): their handles go with the session.
            self._prefetched.clear()
            try:
                if self.after:
                    self._run_after(session, failed, notes)
            finally:
                session.close()

    # -- before/after ----------------------------------------------------------------------
    def _run(self, session: SshSession, which: str, command: str, notes: list[str]) -> None:
        log.info("ssh %s: running %s command: %s", self.settings.label, which, command)
        self.commands.append(f"{which}: {command}")
        started = time.monotonic()
        try:
            _status, stdout, _stderr = session.run_command(which, command)
        except SshCommandFailed as exc:
            notes.append(f"ssh {self.settings.label}: {which} command {command!r} failed: {exc}")
            raise
        seconds = time.monotonic() - started
        # The host's output is hostile text: escaped, so no control sequence reaches a terminal via the log.
        tail = printable(stdout.strip().splitlines()[-1][:200]) if stdout.strip() else ""
        notes.append(f"ssh {self.settings.label}: ran {which} command {command!r} (exit status 0, {seconds:.1f}s)"
                     + (f": {tail}" if tail else ""))

    def _run_after(self, session: SshSession, failed: bool, notes: list[str]) -> None:
        """The after command runs whatever happened: over a new connection when the first one is gone.
        When the backup itself failed, its error is the one reported and after's is only logged."""
        try:
            try:
                self._run(session, "after", self.after or "", notes)
            except SshConnectionFailed:
                fresh = SshSession(self.settings, self.environ)
                try:
                    self._run(fresh, "after", self.after or "", notes)
                finally:
                    fresh.close()
        except (SshCommandFailed, SshConnectionFailed) as exc:
            if not failed:
                raise
            log.warning("ssh %s: %s", self.settings.label, exc)

    # -- the walk --------------------------------------------------------------------------
    def _items(self, session: SshSession, roots: list, view: View, producer: list) -> Iterator[FileItem]:
        queue_box: list[asyncio.Queue] = []

        async def make_queue() -> None:
            queue_box.append(asyncio.Queue(QUEUE_BATCHES))
        session.call(make_queue())
        queue = queue_box[0]
        walk = _Walk(self, session, queue, view)
        future = session.submit(walk.run(roots))
        producer.append(future)
        while True:
            batch = session.call(queue.get())
            if batch is None:
                break
            yield from batch
        session.result(future)  # the walk's own error, if it stopped on one

    def _prefetch(self, session: SshSession, real: bytes) -> None:
        if real not in self._prefetched:
            self.files_opened += 1
            self._prefetched[real] = prefetch(session, real)

    def _open(self, session: SshSession, real: bytes, size: int) -> RemoteFile:
        ahead = self._prefetched.pop(real, None)
        if ahead is None:
            self.files_opened += 1
        return RemoteFile(session, real, size, prefetched=ahead)


class _Walk:
    """Runs on the session's loop: lists folders ahead of the order it emits them in."""

    def __init__(self, source: SshSource, session: SshSession, queue: asyncio.Queue, view: View) -> None:
        self.source = source
        self.session = session
        self.sftp = session.sftp
        self.queue = queue
        self.view = view
        self.batch: list[FileItem] = []
        self.slots = asyncio.Semaphore(LISTINGS_IN_FLIGHT)
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    async def run(self, roots: list) -> None:
        try:
            for path, attrs in roots:
                real = path.encode()
                await self._walk(real, SshSource._name(path), attrs, None, None)
            await self._flush()
        finally:
            await self.queue.put(None)

    async def _flush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, []
            await self.queue.put(batch)

    async def _emit(self, item: FileItem) -> None:
        self.batch.append(item)
        if len(self.batch) >= BATCH:
            await self._flush()

    async def _list(self, real: bytes) -> list | OSError:
        async with self.slots:
            try:
                names = [name async for name in self.sftp.scandir(real)]
            except Exception as exc:  # noqa: BLE001 - sorted out by translate
                error = self.session.translate(exc, real)
                if isinstance(error, OSError):
                    return error
                raise error from None
        # Names from the host are hostile: one component each, never '.', '..', empty, '/' or NUL.
        names = [n for n in names if n.filename not in (b"", b".", b"..") and b"/" not in n.filename
                 and b"\0" not in n.filename]
        names.sort(key=lambda n: n.filename)
        return names

    async def _readlink(self, real: bytes) -> bytes | OSError:
        async with self.slots:
            try:
                return await self.sftp.readlink(real)
            except Exception as exc:  # noqa: BLE001
                error = self.session.translate(exc, real)
                if isinstance(error, OSError):
                    return error
                raise error from None

    async def _walk(self, real: bytes, path: bytes, attrs: Any, longname: bytes | None,
                    pending: "asyncio.Task | None") -> None:
        mode = attrs.permissions or 0
        if stat.S_ISLNK(mode) and pending is None:
            pending = asyncio.ensure_future(self._readlink(real))
        if not stat.S_ISDIR(mode):
            item = await self._item(real, path, attrs, longname, pending)
            if item is not None:
                await self._emit(item)
            return
        if path.count(b"/") >= MAX_DEPTH:
            # Deeper than any real tree (PATH_MAX is 4096): a server presenting an endless folder.
            if pending is not None:
                pending.cancel()
            self.view.skipped.add(path, "dir", "unreadable", f"more than {MAX_DEPTH} folders deep")
            return
        if pending is None:
            pending = asyncio.ensure_future(self._list(real))
        await self._emit(self._make(real, path, attrs, longname, "dir"))
        if not pending.done():
            await self._flush()  # the archiver works on what is there while we wait
        listing = await pending
        if isinstance(listing, OSError):
            self.view.skipped.add(path, "dir", skip_reason(listing), f"cannot be listed: {listing.strerror or listing}")
            return
        children = []
        for name in listing:
            child_path = path + b"/" + name.filename
            if self.source.patterns.excluded(child_path):
                continue
            child_real = real.rstrip(b"/") + b"/" + name.filename
            child_mode = name.attrs.permissions or 0
            task = None
            # Ask for every sibling folder's listing and every link's target now, not when reached.
            if stat.S_ISDIR(child_mode):
                task = asyncio.ensure_future(self._list(child_real))
            elif stat.S_ISLNK(child_mode):
                task = asyncio.ensure_future(self._readlink(child_real))
            children.append((child_real, child_path, name.attrs, name.longname, task))
        try:
            for child_real, child_path, child_attrs, child_longname, task in children:
                await self._walk(child_real, child_path, child_attrs, child_longname, task)
        finally:
            for *_rest, task in children:
                if task is not None and not task.done():
                    task.cancel()

    def _names(self, attrs: Any, longname: bytes | None) -> tuple[str, str]:
        uid, gid = attrs.uid or 0, attrs.gid or 0
        if longname:
            # "-rw-r--r--    1 alice    staff   1234 Jan  1 00:00 name": hostile text, kept as a label only.
            fields = longname.decode("utf-8", "replace").split(None, 8)
            if len(fields) >= 4:
                for number, name, cache in ((uid, fields[2], self.users), (gid, fields[3], self.groups)):
                    if name != str(number) and len(name) <= 64 and name.isprintable():
                        cache[number] = name
        return self.users.get(uid, ""), self.groups.get(gid, "")

    def _make(self, real: bytes, path: bytes, attrs: Any, longname: bytes | None, kind: str, **extra: Any) -> FileItem:
        user, group = self._names(attrs, longname)
        mtime = attrs.mtime_ns if attrs.mtime_ns is not None else (attrs.mtime or 0) * 1_000_000_000
        atime = attrs.atime_ns if attrs.atime_ns is not None else (attrs.atime or 0) * 1_000_000_000
        return FileItem(path=path, type=kind, mode=stat.S_IMODE(attrs.permissions or 0), uid=attrs.uid or 0,
                        gid=attrs.gid or 0, user=user, group=group, mtime_ns=mtime, ctime_ns=0, atime_ns=atime,
                        inode=0, device=0, **extra)

    async def _item(self, real: bytes, path: bytes, attrs: Any, longname: bytes | None,
                    pending: "asyncio.Task | None") -> FileItem | None:
        mode = attrs.permissions or 0
        if stat.S_ISREG(mode):
            session, source = self.session, self.source
            size = attrs.size or 0
            return self._make(real, path, attrs, longname, "file", size=size,
                              open=lambda: source._open(session, real, size),
                              prefetch=lambda: source._prefetch(session, real))
        if stat.S_ISLNK(mode):
            target = await pending if pending is not None else b""
            if isinstance(target, OSError):
                self.view.skipped.add(path, "symlink", skip_reason(target), f"cannot be read: {target.strerror or target}")
                return None
            return self._make(real, path, attrs, longname, "symlink", link_target=target)
        if stat.S_ISDIR(mode):
            return self._make(real, path, attrs, longname, "dir")
        if stat.S_ISFIFO(mode):
            return self._make(real, path, attrs, longname, "fifo")
        if stat.S_ISSOCK(mode):
            return self._make(real, path, attrs, longname, "socket")
        # Device nodes: SFTP does not tell their numbers; restoring one without them would be wrong.
        self.view.skipped.add(path, "device", "unreadable", "a device node, which SFTP cannot describe")
        return None
