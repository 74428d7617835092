"""A bounded, ordered map over a thread pool: memory stays flat however many items."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Executor, Future
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(pool: Executor, function: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """Like ``pool.map`` but with at most ``window`` calls in flight; results in input order.

    If the consumer stops early (or a call raises), calls not yet started are cancelled.
    """
    futures: deque[Future] = deque()
    try:
        for item in items:
            futures.append(pool.submit(function, item))
            if len(futures) >= window:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()
    finally:
        for future in futures:
            future.cancel()
