"""The start method of DataLoader worker processes.

Python's default on Linux before 3.14 is ``fork``, which copies a process together with the
state of every library thread in it, but not the threads: a library that runs threads of its own
(tensorstore, which voxflow-io reads zarr with; CUDA; OpenMP pools) is broken or aborts in the
child. Spawned workers start clean. A fork server would start them faster, but its workers are
the server's children: when the training process is killed (SIGKILL, out of memory), PyTorch's
worker watchdog, which watches the worker's parent, sees the server alive, and the server
stays alive for as long as its workers hold the client's pipe, so both outlive the run forever.
Spawned workers are children of the training process and exit with it.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def loader_start_method() -> str:
    """Name of the start method for DataLoader workers (``multiprocessing_context=``):
    ``"spawn"`` (see the module docstring for why neither ``fork`` nor ``forkserver``).

    Spawned workers import the dataset's modules (torch included) once each at start: keep
    them with ``persistent_workers=True``.
    """
    logger.debug("DataLoader workers are spawned")
    return "spawn"
