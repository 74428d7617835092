"""The executor seam: where a dispatched job runs.

The scheduler hands an executor a callable (``run_job`` bound to a job id) and
keeps the Future. The embedded default is :class:`ThreadExecutor`; at scale a
distributed implementation would enqueue the job id on workers instead (the
job functions take ids and plain values for exactly that reason).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol


class Executor(Protocol):
    """Runs callables somewhere and reports through Futures.

    ``submit`` must not block on the job itself and must return a Future that
    completes when the callable has returned or raised. ``shutdown(wait)``
    stops taking work; with ``wait`` it returns once submitted work is done.
    ``concurrent.futures.ThreadPoolExecutor`` satisfies this protocol.
    Thread-safe: the scheduler calls it from its loop thread.
    """

    def submit(self, function: Callable[..., Any], /, *args: Any) -> Future[Any]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class ThreadExecutor:
    """A pool of daemon threads.

    Unlike ``ThreadPoolExecutor``, whose workers the interpreter joins at exit,
    daemon workers let a stopping control plane exit after its grace period
    even while a job still runs; the scheduler has recorded such jobs as
    interrupted by then.
    """

    def __init__(self, workers: int, name: str = "safehold-job") -> None:
        if workers < 1:
            raise ValueError("an executor needs at least one worker")
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., Any], /, *args: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("the executor is shut down")
        future: Future[Any] = Future()
        self._queue.put((future, function, args))
        return future

    def shutdown(self, wait: bool = True) -> None:
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, function, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except BaseException as error:  # reported through the Future, like concurrent.futures
                future.set_exception(error)
            else:
                future.set_result(result)
