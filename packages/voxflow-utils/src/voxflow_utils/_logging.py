"""One call configures the standard ``logging`` module for a CLI run, rank-aware."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ._errors import ConfigError

_TAG = "_voxflow_handler"


def current_rank() -> int:
    """This process's global rank: ``torch.distributed`` if initialised, else the ``RANK``
    environment variable, else ``LOCAL_RANK``, else 0.

    Raises:
        ConfigError: ``RANK`` or ``LOCAL_RANK`` is set to something other than an integer >= 0.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for name in ("RANK", "LOCAL_RANK"):
        raw = os.environ.get(name)
        if raw is None:
            continue
        value = raw.strip()
        if not value.isdecimal():
            raise ConfigError(
                f"environment variable {name}={raw[:100]!r} must be the process's rank, an "
                "integer >= 0 (as torchrun and SLURM set it)"
            )
        return int(value)
    return 0


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, from the environment alone (no torch).

    Lightning's DDP launcher starts the other ranks as copies of the command with
    ``LOCAL_RANK`` set; cluster launchers set ``RANK``; multi-node runs set ``NODE_RANK``. A
    process is rank 0 unless one of ``RANK``, ``LOCAL_RANK``, ``NODE_RANK`` is set to
    something other than ``"0"``. Usable before ``torch.distributed`` is initialised (e.g. to
    let only rank 0 prepare a run directory).
    """
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name)
        if value is not None and value != "0":
            return False
    return True


def _level(name: str, level: int | str) -> int | str:
    """``level`` if ``logging`` knows it, else ``ConfigError`` listing the known names."""
    known = logging.getLevelNamesMapping()
    if isinstance(level, bool) or not (
        (isinstance(level, int) and level >= 0) or (isinstance(level, str) and level in known)
    ):
        raise ConfigError(
            f"setup_logging: {name} must be one of {sorted(known, key=known.__getitem__)} or an "
            f"integer >= 0, found {level!r}"
        )
    return level


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

    Raises:
        ConfigError: an unknown level name, or a malformed ``RANK``/``LOCAL_RANK``.
    """
    level = _level("level", level)
    other_ranks_level = _level("other_ranks_level", other_ranks_level)
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
