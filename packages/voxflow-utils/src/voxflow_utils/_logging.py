"""One call configures the standard ``logging`` module for a CLI run, rank-aware."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_TAG = "_voxflow_handler"


def current_rank() -> int:
    """This process's global rank: ``torch.distributed`` if initialised, else ``RANK`` (0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def setup_logging(
    level: int | str = "INFO",
    *,
    run_dir: str | os.PathLike[str] | None = None,
    rank: int | None = None,
    other_ranks_level: int | str = "WARNING",
) -> logging.Logger:
    """Configure the root logger: console on stderr, plus ``<run_dir>/rank<r>.log``.

    Every line carries ``[rank r]`` so that DDP ranks can be told apart. Rank 0 logs
    ``level`` to the console, other ranks ``other_ranks_level`` (their files get ``level``).
    Calling it again replaces the handlers it added before, so it is safe in notebooks and
    tests.

    Returns:
        The root logger.
    """
    rank = current_rank() if rank is None else rank
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(
        f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"
    )
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level if rank == 0 else other_ranks_level)
    handlers: list[logging.Handler] = [console]
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(run_dir) / f"rank{rank}.log")
        file_handler.setLevel(level)
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _TAG, True)
        root.addHandler(handler)
    root.setLevel(level)
    return root
