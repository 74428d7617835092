"""Repository locks: shared for backup, restore and check; exclusive for prune.

A lock is an encrypted object under ``locks/`` naming its holder. Acquiring
writes our lock first, then lists all locks: if a conflicting live lock
exists, ours is removed and we wait or fail. Two writers racing both see each
other and both back off; nobody proceeds on a conflict.

A live holder refreshes its lock (heartbeat) every ``refresh_interval()``
seconds from a background thread. A lock is stale when its heartbeat is older
than ``stale_after()``, or when it was taken on this host by a process that no
longer exists (a killed backup; a pid now used by another process, told apart by its
start time, counts as gone). Stale locks never block anyone and ``safehold
unlock`` removes them.

The stale age is 30 minutes unless SAFEHOLD_LOCK_STALE_AFTER (seconds) says
otherwise; every host using a repository MUST agree on it, so change it only
everywhere at once (tests shorten it to pause a real process past it).

A holder MUST NOT trust a lock it cannot prove it still holds. Once its
heartbeat has lapsed for ``hold_limit()`` (the stale age less two refresh
intervals, a margin for clocks that disagree between hosts), or its lock
object is gone or no longer its own, the lock is *lost*: another host may have
judged it stale, taken the exclusive lock and pruned. ``ensure_held`` (cheap,
from memory) is called as work proceeds; ``verify`` re-reads the lock object
from the backend and is called right before committing anything that refers
to data written under the lock. Either raises ``LockLost``. A refresh that
fails with a transient error is retried at the next tick (as restic does); the
lock is lost only once the lapse reaches the hold limit.

A holder about to *delete* (prune, forget, repair) proves one thing more with
``verify_alone``: no lock that acquiring ours would have refused has appeared
beside it (a host whose clock runs far ahead may judge a live lock stale and go
ahead). A contender that is still acquiring writes its lock as a *claim* and
deletes it again on seeing ours; only once it has listed the locks and found no
conflict does it rewrite the lock without the claim mark. So a claim beside us
is a contender backing off, and only a lock without the mark is a holder that
went ahead. (A lock written by an older safehold has no mark: it counts as held.)
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from ..errors import LockLost, RepositoryLocked
from .backends import Kind, ObjectExists, ObjectNotFound
from .crypto import DecryptionFailed

if TYPE_CHECKING:
    from .repository import Repository

REFRESH = 120.0
STALE_AFTER = 30 * 60.0
STALE_AFTER_ENV = "SAFEHOLD_LOCK_STALE_AFTER"


def stale_after() -> float:
    """Seconds after its last heartbeat at which a lock is stale (STALE_AFTER unless overridden)."""
    value = os.environ.get(STALE_AFTER_ENV)
    if not value:
        return STALE_AFTER
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{STALE_AFTER_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def refresh_interval() -> float:
    """Seconds between heartbeats: REFRESH, or a fifteenth of a shortened stale age."""
    return min(REFRESH, stale_after() / 15)


def hold_limit() -> float:
    """Seconds without a successful heartbeat after which a holder counts its lock as lost.

    Two refresh intervals short of the stale age, so that a host whose clock runs up
    to that much ahead of ours still sees a live lock for as long as we trust it.
    """
    return stale_after() - 2 * refresh_interval()


def _elapsed_clock() -> float:
    """A clock that keeps counting while the machine is suspended (CLOCK_BOOTTIME on Linux),
    so a suspended host does not resume believing its heartbeat is fresh."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            return time.clock_gettime(boottime)
        except OSError:
            pass
    return time.monotonic()


_AAD = b"safehold-lock"


def process_namespace() -> str:
    """Identifies where a pid means something: the hostname, the boot and the pid namespace.

    Two containers may share a hostname; only a lock taken in our own pid
    namespace on this boot can be judged dead by looking up its pid.
    """
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            parts.append(handle.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return ":".join(parts)


@dataclass(frozen=True)
class LockInfo:
    name: str
    exclusive: bool
    hostname: str
    pid: int
    purpose: str
    created: float
    heartbeat: float
    namespace: str = ""
    claim: bool = False  # written while acquiring, before the conflict check passed
    process_started: int | None = None  # the holder's start time (/proc/PID/stat), against pid reuse

    def is_stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if now - self.heartbeat > stale_after():
            return True
        if self.namespace == process_namespace():
            if not _pid_alive(self.pid):
                return True
            # The pid lives, but is it still the holder? A busy host reuses the pid of a killed
            # backup within minutes, which would bring its lock back to life until the stale age.
            started = _process_start(self.pid)
            if self.process_started is not None and started is not None and started != self.process_started:
                return True
        return False

    def describe(self) -> str:
        return f"{self.purpose} (pid {self.pid} on {self.hostname})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed child not yet reaped) still answers kill(0); it holds nothing.
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def _process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Lock:
    def __init__(self, repository: "Repository", exclusive: bool, purpose: str) -> None:
        self.repository = repository
        self.exclusive = exclusive
        self.purpose = purpose
        self.name = secrets.token_hex(16)
        self.created = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # When the last heartbeat that reached the backend was started, on two clocks: a
        # VM suspended and resumed may stop one of them, so the lapse is the larger.
        self._refreshed = (_elapsed_clock(), time.time())
        self.lost: str | None = None  # why the lock was lost; None while held
        self._refresh_error: str | None = None  # the last refresh's error, until one succeeds
        self._fixed_identity: dict | None = None

    def _identity(self) -> dict:
        """The fields that say a lock object is this holder's (the heartbeat changes, these do not)."""
        if self._fixed_identity is None:
            self._fixed_identity = {"exclusive": self.exclusive, "hostname": socket.gethostname(),
                                    "pid": os.getpid(), "created": self.created, "namespace": process_namespace(),
                                    "process_started": _process_start(os.getpid())}
        return self._fixed_identity

    def _encrypted(self, claim: bool = False) -> bytes:
        document = {**self._identity(), "purpose": self.purpose, "heartbeat": time.time()}
        if claim:
            document["claim"] = True
        return self.repository.cipher.encrypt(json.dumps(document).encode(), _AAD)

    # -- proving the lock is held ---------------------------------------------------
    def lapsed(self) -> float:
        """Seconds since the last heartbeat that reached the backend began."""
        clock, wall = self._refreshed
        return max(_elapsed_clock() - clock, time.time() - wall)

    def lose(self, reason: str) -> LockLost:
        """Mark the lock lost (the first reason sticks) and return the error to raise."""
        if self.lost is None:
            self.lost = reason
        return LockLost(purpose=self.purpose, reason=self.lost, stale=f"{stale_after():g}s")

    def ensure_held(self) -> None:
        """Raise LockLost if the lock was lost or its heartbeat lapsed too long. Memory only: cheap."""
        if self.lost is None and self.lapsed() > hold_limit():
            if self._refresh_error is not None:
                self.lose(f"the lock could not be refreshed for {self.lapsed():.0f}s: {self._refresh_error}")
            else:
                self.lose(f"no heartbeat reached the repository for {self.lapsed():.0f}s "
                          f"(a lock is stale after {stale_after():g}s; was the process paused or cut off?)")
        if self.lost is not None:
            raise self.lose(self.lost)

    def verify(self) -> None:
        """Prove the lock is still ours: re-read the lock object from the backend and check the
        heartbeat has not lapsed. Raises LockLost (and marks the lock lost) otherwise."""
        self.ensure_held()
        self._check_own_object()
        # The read may itself have stalled; the lapse is judged after it.
        self.ensure_held()

    def verify_alone(self) -> None:
        """``verify``, and prove that no lock our acquiring would have refused is held beside
        ours: a holder MUST call it right before each destructive step (deleting packs, index
        objects, snapshots), since a host that judged our lock stale may be writing snapshots
        that use what we are about to delete. Raises LockLost (and marks the lock lost)."""
        self.verify()
        for other in list_locks(self.repository):
            if other.name == self.name or other.is_stale() or not (self.exclusive or other.exclusive):
                continue
            if other.claim and not self._claim_goes_ahead(other.name):
                continue  # a contender that saw our lock and backed off (or is still deciding)
            raise self.lose(f"{other.describe()} took a{'n exclusive' if other.exclusive else ' shared'} lock "
                            "beside ours (it judged ours stale: are the clocks of the hosts far apart, or "
                            f"{STALE_AFTER_ENV} different?)")
        self.ensure_held()  # the listing may have stalled

    def _claim_goes_ahead(self, name: str) -> bool:
        """Watch a claim for a moment: a contender that sees our live lock deletes it at once;
        one that judged ours stale rewrites it as held. Still a claim at the end: not (yet) held."""
        for delay in (0.05, 0.1, 0.2, 0.4, 0.8):
            time.sleep(delay)
            try:
                data = self.repository.backend.get(Kind.LOCKS, name)
                document = json.loads(self.repository.cipher.decrypt(data, _AAD))
            except ObjectNotFound:
                return False
            except (DecryptionFailed, ValueError):
                return True  # unreadable now: count it as held, as list_locks does
            if not document.get("claim"):
                return True
        return False

    def _check_own_object(self) -> None:
        try:
            data = self.repository.backend.get(Kind.LOCKS, self.name)
        except ObjectNotFound:
            raise self.lose(f"lock {self.name[:8]} was removed from the repository "
                             "(by 'safehold unlock' or another host that judged it stale)") from None
        try:
            document = json.loads(self.repository.cipher.decrypt(data, _AAD))
        except (DecryptionFailed, ValueError):
            raise self.lose(f"lock {self.name[:8]} in the repository is no longer readable as ours") from None
        theirs = {key: document.get(key) for key in self._identity()}
        if theirs != self._identity():
            raise self.lose(f"lock {self.name[:8]} now belongs to {document.get('purpose', '?')} "
                             f"(pid {document.get('pid')} on {document.get('hostname')})")

    def refresh(self) -> None:
        """One heartbeat: prove the lock is still ours, then rewrite it with a new heartbeat.

        Never recreates a lock that is gone: a holder whose lock was removed must stop,
        not resurrect it after a prune has run."""
        started = self.clock()
        self.verify()
        self.write_heartbeat(started)

    @staticmethod
    def clock() -> tuple[float, float]:
        """Now, on the two clocks a heartbeat is timed by (give it to ``write_heartbeat``)."""
        return (_elapsed_clock(), time.time())

    def write_heartbeat(self, started: tuple[float, float]) -> None:
        """Rewrite the lock with a new heartbeat, counted from ``started`` (``clock()`` taken
        before the proof that the lock is still ours, ``verify``, which the caller made)."""
        if self.lost is not None:
            raise self.lose(self.lost)  # never rewrite a lock we know is lost
        self._write()
        self._refreshed = started

    def _create(self) -> None:
        # A conditional write (S3: If-None-Match), so a lock is never silently
        # replaced, even by a name collision; heartbeats then overwrite it.
        try:
            self.repository._put(Kind.LOCKS, self.name, self._encrypted(claim=True), exclusive=True)
        except ObjectExists:
            # The client retried a write whose answer was lost (a reset after S3 stored it): the
            # object is then ours. Anything else under our random name is refused.
            self._check_own_object()

    def _write(self) -> None:
        self.repository._put(Kind.LOCKS, self.name, self._encrypted())

    def acquire(self, wait: float = 0.0, meanwhile: "Callable[[], None] | None" = None) -> "Lock":
        """Take the lock (waiting up to ``wait`` seconds for a conflicting one to go).

        ``meanwhile``: reads to make while the other locks are listed and our claim is turned into
        a held lock (on S3 two of the three round trips of acquiring; a backup's history listings,
        issue 19). Only with ``wait`` 0: they are made once our claim is stored, so a prune that
        holds or takes the exclusive lock while they run is seen by our listing of the locks (it
        was there before, or it sees our claim and backs off); on a conflict their result is
        dropped with the RepositoryLocked error (the caller drops the repository object they
        filled). Nothing may be written by them: writing waits for the held lock. An error
        they raise releases the lock and is raised."""
        if meanwhile is not None and wait > 0:
            self.acquire(wait)
            try:
                meanwhile()
            except BaseException:
                self.release()
                raise
            return self
        deadline = time.monotonic() + wait
        delay = 0.2
        while True:
            started = (_elapsed_clock(), time.time())
            self._create()
            reads = None
            if meanwhile is not None:
                from concurrent.futures import ThreadPoolExecutor

                reads_pool = ThreadPoolExecutor(1, thread_name_prefix="safehold-lock-reads")
                reads = reads_pool.submit(meanwhile)
                reads_pool.shutdown(wait=False)
            try:
                conflict = self._conflict()
            except BaseException:
                if reads is not None:
                    reads.exception()  # never leave the reads running behind an error
                self._delete_claim()
                raise
            if conflict is None:
                break
            if reads is not None:
                reads.exception()  # dropped: the repository object they filled goes with the error
            self.repository.backend.delete(Kind.LOCKS, self.name)
            if time.monotonic() >= deadline:
                raise RepositoryLocked(
                    kind="exclusively" if conflict.exclusive else "(shared)",
                    holder=conflict.describe(),
                    since=datetime.fromtimestamp(conflict.created, timezone.utc).isoformat(timespec="seconds"),
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)
        try:
            self._write()  # the claim becomes a held lock (see verify_alone)
        except BaseException:
            if reads is not None:
                reads.exception()
            self._delete_claim()
            raise
        self._refreshed = started
        self.repository.held_lock = self
        self._thread = threading.Thread(target=self._heartbeat, name="safehold-lock", daemon=True)
        self._thread.start()
        if reads is not None:
            try:
                reads.result()
            except BaseException:
                self.release()
                raise
        return self

    def _delete_claim(self) -> None:
        try:
            self.repository.backend.delete(Kind.LOCKS, self.name)
        except Exception:
            pass  # the error that stopped acquiring explains more; a left claim is stale once we exit

    def _conflict(self) -> LockInfo | None:
        for other in list_locks(self.repository, skip=self.name):  # ours was just written: not read back
            if other.name == self.name or other.is_stale():
                continue
            if self.exclusive or other.exclusive:
                return other
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(refresh_interval()):
            try:
                self.refresh()
            except LockLost:
                return  # the holder stops at its next ensure_held or verify
            except Exception as exc:
                # A transient error: retried at the next tick, until the lapse reaches the hold
                # limit (then ensure_held reports it).
                self._refresh_error = f"{type(exc).__name__}: {exc}"
                continue
            self._refresh_error = None

    def release(self) -> None:
        # Packs still being stored in the background (a backup that failed or was interrupted
        # before its commit waited for them) are finished first: nothing is written to the
        # repository after its lock is gone.
        self.repository.drain_uploads()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.repository.held_lock is self:
            self.repository.held_lock = None
        self.repository.backend.delete(Kind.LOCKS, self.name)

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def list_locks(repository: "Repository", skip: str | None = None) -> list[LockInfo]:
    """Every lock in the backend, read up to 8 at a time (on S3 each is a round trip; a busy
    repository holds a lock per worker). ``skip``: a lock name that is listed but not read (the
    caller's own, whose content it knows): it is left out of the result."""
    from concurrent.futures import ThreadPoolExecutor

    names = [info.name for info in repository.backend.list(Kind.LOCKS) if info.name != skip]
    if len(names) <= 1:
        documents = [_read_lock(repository, name) for name in names]
    else:
        with ThreadPoolExecutor(min(8, len(names)), thread_name_prefix="safehold-locks") as pool:
            documents = list(pool.map(lambda name: _read_lock(repository, name), names))
    locks = []
    for name, document in zip(names, documents):
        if document is None:
            continue  # released while we listed
        locks.append(LockInfo(name, bool(document["exclusive"]), document["hostname"], int(document["pid"]),
                              document.get("purpose", "?"), float(document["created"]),
                              float(document["heartbeat"]), document.get("namespace", ""),
                              bool(document.get("claim", False)), _int_or_none(document.get("process_started"))))
    return locks


def _read_lock(repository: "Repository", name: str) -> dict | None:
    try:
        data = repository.backend.get(Kind.LOCKS, name)
        return json.loads(repository.cipher.decrypt(data, _AAD))
    except ObjectNotFound:
        return None
    except (DecryptionFailed, ValueError):
        # Unreadable lock (other key, torn by an old bug): treat as live but
        # unknown, so we never run prune beside something we cannot see.
        return {"exclusive": True, "hostname": "?", "pid": 0, "purpose": "unreadable lock",
                "created": 0.0, "heartbeat": time.time()}


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def remove_locks(repository: "Repository", all_locks: bool = False) -> list[LockInfo]:
    removed = []
    for lock in list_locks(repository):
        if all_locks or lock.is_stale():
            repository.backend.delete(Kind.LOCKS, lock.name)
            removed.append(lock)
    return removed
