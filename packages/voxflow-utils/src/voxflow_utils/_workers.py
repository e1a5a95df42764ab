"""The start method of DataLoader worker processes.

Python's default on Linux before 3.14 is ``fork``, which copies a process together with the
state of every library thread in it, but not the threads: a library that runs threads of its own
(tensorstore, which voxflow-io reads zarr with; CUDA; OpenMP pools) is broken or aborts in the
child. Workers started from a fork server (a clean process started once, before any of that ran)
are not, and cost one import of the preloaded modules instead of one per worker.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def loader_start_method(preload: Sequence[str] = ("torch",)) -> str:
    """Name of the start method for DataLoader workers (``multiprocessing_context=``):
    ``"forkserver"`` where the platform has it (Linux, macOS), with ``preload`` imported once
    in the server before it forks the workers; ``"spawn"`` elsewhere (Windows).

    ``preload`` applies only if the fork server has not started yet in this process.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.set_forkserver_preload(list(preload))
    logger.debug("DataLoader workers start from a fork server (preloading %s)", list(preload))
    return "forkserver"
