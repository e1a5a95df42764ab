"""How many threads the streaming passes use: the usable cores, at most 8."""

from __future__ import annotations

import os


def default_workers() -> int:
    """Cores this process may run on (``sched_getaffinity`` where it exists), capped at 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))
