"""Destinations on this host: a directory (file snapshots) and image files (disk snapshots).

Both write below a ``Place``: the operator's own path, or, for API restores, a path below the
server's restore root that is walked component by component with O_NOFOLLOW|O_DIRECTORY when the
job runs (the queue-time check of the API cannot see a symlink that an earlier queued restore
planted), and written relative to the descriptor the walk ends on (no resolve()-then-use window).
The hostile-snapshot rules of ``directory`` and ``image`` apply unchanged.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from typing import Any

from ..errors import DestinationError, PathNotInSnapshot, UsageError
from .base import BlobReader, Progress, RestoreReport, SnapshotInfo
from .directory import DirectoryRestorer, open_directory_below, split_path, valid_name
from .image import restore_image
from .options import DirectoryOptions, ImageOptions


class Place:
    """Where a local restore writes: the destination, below a restore root or as the operator gave it."""

    def __init__(self, destination: str, restore_root: str | None) -> None:
        self.destination = destination
        self.parts: list[bytes] | None = None
        self.root_fd: int | None = None
        if restore_root is not None:
            root = os.path.abspath(restore_root)
            path = os.path.normpath(os.path.join(root, destination))
            relative = os.path.relpath(path, root)
            parts = [] if relative == "." else os.fsencode(relative).split(b"/")
            if not all(valid_name(part) for part in parts):
                raise DestinationError(destination=destination, detail=f"does not lie inside the restore root {root}")
            try:
                os.makedirs(root, exist_ok=True)
                self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise DestinationError(destination=root, detail=exc.strerror or str(exc)) from exc
            self.parts = parts

    def check(self, parts: list[bytes] | None = None) -> None:
        """Refuse a symlink or non-directory on the way below the root, without making anything."""
        if self.root_fd is None:
            return
        try:
            os.close(open_directory_below(self.root_fd, self.parts if parts is None else parts, create=False))
        except FileNotFoundError:
            pass  # made by write
        except OSError as exc:
            raise self._error(exc) from exc

    def directory(self) -> int | None:
        """The destination as an open directory below the root (None: use the path)."""
        if self.root_fd is None:
            return None
        return self._walk(self.parts)

    def parent_and_name(self) -> tuple[int | None, str]:
        """For one image: the directory that will hold it (None: use the path) and its name there."""
        if self.root_fd is None:
            return None, self.destination
        if not self.parts:
            raise DestinationError(destination=self.destination, detail="is a directory; give a file name")
        return self._walk(self.parts[:-1]), os.fsdecode(self.parts[-1])

    def _walk(self, parts: list[bytes]) -> int:
        try:
            return open_directory_below(self.root_fd, parts)
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> DestinationError:
        detail = exc.strerror or str(exc)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            detail = "a component below the restore root is a symlink or not a directory"
        return DestinationError(destination=self.destination, detail=detail)

    def close(self) -> None:
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None


def _clear(fd: int, names: list[str] | None = None) -> None:
    """Remove ``names`` (default: every entry) inside the open directory, never following a link."""
    for name in os.listdir(fd) if names is None else names:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


class _Local:
    """What both local destinations share: the place, the directory they made, rollback."""

    def __init__(self, path: str, overwrite: bool, restore_root: str | None) -> None:
        self.path = path
        self.overwrite = overwrite
        self.restore_root = restore_root
        self.place: Place | None = None
        self.created_directory = False  # the destination directory did not exist: rollback removes it
        self.was_empty = False  # it existed empty: rollback empties it again
        self.created: list[tuple[int | None, str]] = []  # (directory fd or None for a path, name) of new files

    def _open_place(self) -> Place:
        if self.place is None:
            self.place = Place(self.path, self.restore_root)
        return self.place

    def _note_directory(self, path_is_directory: bool) -> None:
        """Before writing: remember whether the destination directory is new or empty."""
        if self.restore_root is not None or not path_is_directory:
            return
        if not os.path.lexists(self.path):
            self.created_directory = True
        elif os.path.isdir(self.path) and not os.listdir(self.path):
            self.was_empty = True

    def commit(self) -> None:
        self._close()

    def rollback(self) -> None:
        try:
            for fd, name in self.created:
                try:
                    os.unlink(name, dir_fd=fd) if fd is not None else os.unlink(name)
                except FileNotFoundError:
                    pass
            self._close_created()
            if self.created_directory and os.path.isdir(self.path):
                shutil.rmtree(self.path)
            elif self.was_empty and os.path.isdir(self.path):
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    _clear(fd)
                finally:
                    os.close(fd)
        finally:
            self.created_directory = self.was_empty = False
            self._close()

    def _close(self) -> None:
        self._close_created()
        if self.place is not None:
            self.place.close()
            self.place = None

    def _close_created(self) -> None:
        for fd, _name in self.created:
            if fd is not None:
                os.close(fd)
        self.created = []


class DirectoryDestination(_Local):
    """File snapshots into a directory, through the hardened ``DirectoryRestorer``.

    Rollback removes what was restored when the directory was new or empty; with ``overwrite``
    into a non-empty directory the old files that were replaced cannot be brought back."""

    def __init__(self, options: DirectoryOptions, *, threads: int | None = None,
                 restore_root: str | None = None) -> None:
        super().__init__(options.path, options.overwrite, restore_root)
        self.options = options
        self.threads = threads
        self.root_directory_fd: int | None = None

    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Any:
        if snapshot.kind != "files":
            raise UsageError(f"snapshot {snapshot.short_id} holds {snapshot.kind}, not files: restore it to an image")
        place = self._open_place()
        place.check()
        if place.root_fd is None and os.path.lexists(self.path):
            if not os.path.isdir(self.path):
                raise DestinationError(destination=self.path, detail="exists and is not a directory")
            if not self.overwrite and os.listdir(self.path):
                raise DestinationError(destination=self.path, detail="directory is not empty")
        return items

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        place = self._open_place()
        self._note_directory(True)
        directory_fd = place.directory()
        if directory_fd is not None and not os.listdir(directory_fd):
            self.was_empty, self.root_directory_fd = True, os.dup(directory_fd)
        try:
            restorer = DirectoryRestorer(reader, self.path, includes=self.options.includes, overwrite=self.overwrite,
                                         threads=self.threads, on_progress=progress,
                                         special_files=self.options.special_files, destination_fd=directory_fd)
            result = restorer.restore(plan)
        finally:
            if directory_fd is not None:
                os.close(directory_fd)
        return RestoreReport(files=result.files, bytes_written=result.bytes_written, damaged=result.damaged,
                             warnings=result.warnings, special=result.special)

    def rollback(self) -> None:
        if self.root_directory_fd is not None:  # below the restore root: empty it again, by descriptor
            try:
                _clear(self.root_directory_fd)
            finally:
                os.close(self.root_directory_fd)
                self.root_directory_fd = None
                self.was_empty = False
        super().rollback()

    def commit(self) -> None:
        if self.root_directory_fd is not None:
            os.close(self.root_directory_fd)
            self.root_directory_fd = None
        super().commit()


class ImageDestination(_Local):
    """Disk snapshots: one disk to ``path`` itself (a file or block device), several (or
    ``into_directory``) into the directory ``path``, each under its single-component name.
    Rollback removes the image files it created (and the directory, when it made it)."""

    def __init__(self, options: ImageOptions, *, threads: int | None = None, restore_root: str | None = None) -> None:
        super().__init__(options.path, options.overwrite, restore_root)
        self.options = options
        self.threads = threads

    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Any:
        if snapshot.kind == "files":
            raise UsageError(f"snapshot {snapshot.short_id} holds files: restore it to a directory")
        includes = self.options.includes
        selected = [i for i in items if not includes or os.fsdecode(i["path"]) in includes]
        if not selected:
            raise PathNotInSnapshot(path=",".join(includes or []), snapshot=snapshot.short_id)
        into_directory = len(selected) > 1 or self.options.into_directory
        place = self._open_place()
        if place.root_fd is not None:
            place.check(place.parts if into_directory else (place.parts or [])[:-1])
        elif into_directory and os.path.isdir(self.path) and not self.overwrite and os.listdir(self.path):
            raise DestinationError(destination=self.path, detail="directory is not empty")
        elif not into_directory and os.path.isfile(self.path) and not os.path.islink(self.path) and not self.overwrite:
            raise DestinationError(destination=self.path, detail="file exists")
        return selected, into_directory

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        selected, into_directory = plan
        place = self._open_place()
        report = RestoreReport()
        self._note_directory(into_directory)
        directory_fd = self._image_directory(place) if into_directory else None
        done = 0

        def on_progress(written: int, name: str = "") -> None:
            progress(done + written, name)

        try:
            for item in selected:
                name = os.fsdecode(item["path"])
                if directory_fd is None:  # one image restores to the destination itself
                    parent_fd, path = place.parent_and_name()
                else:
                    # Several go into it as a directory, each under a single-component name: a
                    # crafted snapshot must not write outside it or into a subdirectory of it.
                    file_name = self._file_name(item["path"])
                    if file_name is None:
                        report.damaged.append(f"{name}: unsafe disk name, not restored")
                        continue
                    parent_fd, path = os.dup(directory_fd), os.fsdecode(file_name)
                existed = self._exists(parent_fd, path)
                try:
                    result = restore_image(reader, item, path, overwrite=self.overwrite, threads=self.threads,
                                           on_progress=lambda written, name=name: on_progress(written, name),
                                           dir_fd=parent_fd, special_files=self.options.special_files)
                except DestinationError as exc:
                    if directory_fd is None:
                        raise
                    report.damaged.append(f"{name}: not restored: {exc.fields.get('detail', exc)}")
                    continue
                finally:
                    if not existed and self._exists(parent_fd, path):
                        self.created.append((os.dup(parent_fd) if parent_fd is not None else None, path))
                    if parent_fd is not None:
                        os.close(parent_fd)
                report.files += 1
                report.bytes_written += result.bytes_written
                done = report.bytes_written
                report.special += result.special
                for offset, length in result.damaged_ranges:
                    report.damaged.append(f"{name}: bytes {offset}-{offset + length - 1}")
        finally:
            if directory_fd is not None:
                os.close(directory_fd)
        return report

    def _file_name(self, path: object) -> bytes | None:
        """The single name a disk gets in the directory, or None when its name is unsafe."""
        if valid_name(path):
            return path  # type: ignore[return-value]
        parts = split_path(path) if self.options.flatten_names else None
        # Each component is a safe name on its own, so the joined name holds no '/' and is no '..'.
        return b"-".join(parts) if parts else None

    @staticmethod
    def _exists(parent_fd: int | None, path: str) -> bool:
        try:
            os.stat(path, dir_fd=parent_fd, follow_symlinks=False)
            return True
        except OSError:
            return False

    def _image_directory(self, place: Place) -> int:
        """The directory several disk images go into, open; a non-empty one needs ``overwrite``."""
        fd = place.directory()
        if fd is None:
            try:
                os.makedirs(place.destination, exist_ok=True)
                fd = os.open(place.destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise DestinationError(destination=place.destination, detail=exc.strerror or str(exc)) from exc
        if not self.overwrite and os.listdir(fd):
            os.close(fd)
            raise DestinationError(destination=place.destination, detail="directory is not empty")
        return fd
