"""What every job needs: the configuration, the catalog and the repository.

Job functions take a :class:`Context` plus plain values (names, ids, paths),
never live objects from a caller, so the same functions run in the CLI, the
server's worker pool, or as tasks of a distributed queue.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..config import Config, load_config
from ..files import make_private_directory, write_private_json
from ..repository import Repository
from ..repository.backends import DirectoryBackend, open_backend
from ..repository.cache import ObjectCache
from ..repository.locks import Lock

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

    from ..catalog import Catalog
    from ..catalog.light import SqliteJobs

ProgressCallback = Callable[[dict], None]


def _quiet(_event: dict) -> None:
    pass


@dataclass
class Context:
    config: Config
    threads: int | None = None
    compression: int | None = None
    progress: ProgressCallback = _quiet
    # Asked when neither the environment nor a password file holds the password
    # (the CLI sets it to a hidden prompt on a terminal; services never prompt).
    ask_password: Callable[[bool], bytes] | None = None
    # The key file to try (a prefix of its id): one derivation instead of up to
    # Repository.MAX_KEY_ATTEMPTS in a repository with many key files.
    key_id: str | None = None
    # A configured copy (``copies:`` in targets.yml) to read instead of the configured repository
    # ('--repository NAME'): restores, listings, restore tests and drills from the second copy.
    repository_name: str | None = None
    # The local cache of snapshot, index and verdict objects (repository/cache.py); False: off
    # ('safehold --no-cache'), as is 'cache: false' in targets.yml.
    cache: bool = True
    _catalog: "Catalog | None" = field(default=None, repr=False)
    _jobs: "SqliteJobs | None" = field(default=None, repr=False)
    _unlocked: tuple | None = field(default=None, repr=False)

    @classmethod
    def load(cls, config_path: str | Path | None = None, **options) -> "Context":
        return cls(load_config(config_path), **options)

    @property
    def catalog(self) -> "Catalog":
        # Imported on first use: SQLAlchemy costs ~0.3 s of start-up that
        # read-only commands (ls, diff, stats) do not need.
        from ..catalog import Catalog

        if self._catalog is None:
            url = self.config.catalog_url
            if url.startswith("sqlite:///"):
                make_private_directory(Path(url[len("sqlite:///"):]).parent)  # the state folder, 0700
            self._catalog = Catalog.open(url)
        return self._catalog

    @property
    def jobs(self) -> "Catalog | SqliteJobs":
        """What records this command's jobs (``.job()``, ``.log()``...): the catalog when it is
        open already, else, for a SQLite catalog whose schema is current, a recorder on the
        standard library's sqlite3 that writes the same rows without importing SQLAlchemy
        (catalog/light.py; a quarter of an incremental copy's start-up); else the catalog, which
        creates or migrates it. For commands that only record their job (``copy``)."""
        if self._catalog is not None:
            return self._catalog
        if self._jobs is None:
            from ..catalog.light import SqliteJobs

            self._jobs = SqliteJobs.open(self.config.catalog_url)
            if self._jobs is None:
                return self.catalog
        return self._jobs

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def use_repository(self, name: str | None) -> "Context":
        """Work on the configured copy ``name`` from now on (None: the configured repository).
        Raises CopyNotFound, naming the configured copies, for an unknown name."""
        if name is not None:
            self.config.copy_named(name)
        if name != self.repository_name:
            self.repository_name = name
            self._unlocked = None  # another repository: another master key
        return self

    def with_repository(self, name: str | None) -> "Context":
        """A context on the configured copy ``name`` that shares this one's catalog (one job
        history); this context is left as it is. Raises CopyNotFound."""
        if name == self.repository_name:
            return self
        if name is not None:
            self.config.copy_named(name)
        return dataclasses.replace(self, repository_name=name, _catalog=self.catalog, _unlocked=None)

    @property
    def repository_config(self):
        """The repository this context works on: 'repository:', or the copy chosen by name."""
        if self.repository_name is None:
            return self.config.repository
        return self.config.copy_named(self.repository_name).repository

    @property
    def repository_url(self) -> str:
        return self.repository_config.url

    def backend(self):
        return open_backend(self.repository_url, **self.repository_config.backend_options())

    def password(self, new: bool = False) -> bytes:
        from ..errors import PasswordMissing

        try:
            return self.repository_config.password()
        except PasswordMissing:
            if self.ask_password is None:
                raise
            return self.ask_password(new)

    def open_repository(self, load_index: bool = True) -> Repository:
        # The unwrapped key is kept for the life of this context (in memory only), so
        # 'backup --all' pays the deliberately slow key derivation once, not per target.
        if self._unlocked is None:
            remembered = self._remembered_keys()
            last = remembered.get(self.repository_url)
            repository = Repository.open(self.backend(), self.password(), key_id=self.key_id,
                                         preferred=[last] if isinstance(last, str) else [])
            self._unlocked = (repository.master, repository.key_name)
            if last != repository.key_name:
                self._remember_key(remembered, repository.key_name)
        else:
            repository = Repository.open(self.backend(), b"", unlocked=self._unlocked)
        if self.compression is not None:
            repository.compression = self.compression
        if self.cache and self.config.cache and not isinstance(repository.backend, DirectoryBackend):
            # A local repository is read directly: a copy in the state folder would cost the same to read.
            repository.cache = ObjectCache.for_repository(self.config.state_dir, repository.id)
        if load_index:
            repository.load_index()
        return repository

    def open_ahead(self, pool: "Executor") -> "Future[Repository] | None":
        """Open the repository in ``pool`` (its round trips and the key derivation, Argon2id, which
        runs outside the GIL) while this thread does something else, e.g. records the job. The
        thread works on a copy of this context that never prompts and hands back only the unwrapped
        key; None when the key is unwrapped already. On an error in the future the caller opens
        the repository itself (``locked()``), which prompts or raises the error in its job."""
        if self._unlocked is not None:
            return None
        shadow = dataclasses.replace(self, ask_password=None, _catalog=None, _jobs=None)

        def open_key() -> Repository:
            opened = shadow.open_repository(load_index=False)
            if self._unlocked is None and shadow.repository_name == self.repository_name:
                self._unlocked = shadow._unlocked
            return opened

        return pool.submit(open_key)

    # The key file that last opened each repository from this state folder is tried first, so
    # the scheduler and daily commands pay one derivation however many key files exist. Only
    # the key file's name is stored (public: it is the object's name in the backend).
    def _key_memory(self) -> Path:
        return Path(self.config.state_dir) / "last-keys.json"

    def _remembered_keys(self) -> dict:
        """repository url -> the key file that last opened it ({} when none is remembered)."""
        try:
            remembered = json.loads(self._key_memory().read_text())
        except (OSError, ValueError):
            return {}
        return remembered if isinstance(remembered, dict) else {}

    def _remember_key(self, remembered: dict, key_name: str) -> None:
        try:
            write_private_json(self._key_memory(), dict(remembered, **{self.repository_url: key_name}))
        except OSError:
            pass  # a hint only: a read-only state folder must not fail the command

    @contextmanager
    def locked(self, exclusive: bool = False, purpose: str = "", wait: float = 0.0,
               load_index: bool = True, opened: Repository | None = None,
               meanwhile: Callable[[Repository], None] | None = None) -> Iterator[Repository]:
        """Lock the repository (``opened``: one this context opened already, not locked yet).
        ``meanwhile``: reads of the repository made while the lock is acquired (``Lock.acquire``)."""
        repository = opened if opened is not None else self.open_repository(load_index=False)
        lock: Lock = repository.lock(exclusive=exclusive, purpose=purpose, wait=wait,
                                     meanwhile=(lambda: meanwhile(repository)) if meanwhile is not None else None)
        try:
            if load_index:
                # Loaded under the lock: a prune that finished just before sees its new index used.
                repository.load_index()
            yield repository
        finally:
            lock.release()

    def threads_or_default(self) -> int:
        return self.threads or os.cpu_count() or 1
