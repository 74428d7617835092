"""scheduler layer: when each target is due, and the executor seam that runs queued jobs.

Concepts: ``Scheduler`` (``tick(now)`` queues due jobs and dispatches queued
ones within the concurrency limits; ``start``/``stop`` run it in the
background), the timing rules in ``timing`` (cron slots, RPO-derived
intervals, jitter, retry backoff) and the ``Executor`` protocol with the
embedded ``ThreadExecutor``. The catalog is the queue; the scheduler keeps no
state that a restart would need.
"""

from safehold.scheduler.core import Scheduler, TickReport
from safehold.scheduler.executor import Executor, ThreadExecutor

__all__ = ["Executor", "Scheduler", "ThreadExecutor", "TickReport"]
