"""A process-local thread pool for decoding chunks, tiles and slice files in parallel.

Decoders (zstd, blosc, zlib, PNG) release the GIL, so threads overlap file reads and decoding
on every core. The pool is created lazily and again after a fork, so DataLoader workers never
inherit a pool whose threads did not survive the fork.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_MAX_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


def _get_pool() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = max(1, min(_MAX_THREADS, cores or 1))
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxflow-io")
        _pool_pid = os.getpid()
    return _pool


def run_all(function: Callable[[T], None], items: Iterable[T]) -> None:
    """Call ``function`` on every item, in parallel when there is more than one.

    The first exception raised by any call propagates after all calls have finished.
    """
    items = list(items)
    if len(items) <= 1:
        for item in items:
            function(item)
        return
    futures = [_get_pool().submit(function, item) for item in items]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
