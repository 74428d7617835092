"""NumPy, imported when first used rather than when a module loads.

Commands that never touch the blob index or the ransomware signals (``snapshots``, ``ls`` of a
small repository, ``--help``) should not pay NumPy's import (~0.08-0.1 s of CPU, measured with
``python -X importtime``), so the index and the signal code ask :func:`numpy` for the module at
the moment they compute something.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

_module: ModuleType | None = None
_lock = threading.Lock()


def numpy() -> ModuleType:
    """The numpy module, imported on the first call (thread-safe).

    NumPy's OpenBLAS starts a thread per core when it loads, and we never multiply a matrix: the
    idle server threads still showed up in profiles of restores (perf: blas_thread_server).
    OpenBLAS reads its thread count only while loading, so the variable is set for the import
    alone and put back, keeping the environment of commands safehold runs (health checks) as the
    user gave it."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            saved = os.environ.get("OPENBLAS_NUM_THREADS")
            os.environ["OPENBLAS_NUM_THREADS"] = saved or "1"
            try:
                import numpy as module
            finally:
                if saved is None:
                    del os.environ["OPENBLAS_NUM_THREADS"]
                else:
                    os.environ["OPENBLAS_NUM_THREADS"] = saved
            _module = module
    return _module


class LazyNumpy:
    """Stands for the numpy module in a module's globals (``np = LazyNumpy()``): the first
    attribute read imports it; annotations (``np.ndarray`` under postponed evaluation) cost nothing."""

    def __getattr__(self, name: str):
        return getattr(numpy(), name)
