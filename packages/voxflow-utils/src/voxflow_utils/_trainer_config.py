"""``TrainerConfig``: the Lightning ``Trainer`` arguments a run file may set (pydantic only)."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._errors import ConfigError

PositiveInt = Annotated[int, Field(ge=1)]
Precision = Literal["32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true"]
"""The values of Lightning's ``Trainer(precision=...)`` a run may choose."""
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
"""Every :data:`Precision` value, in order (e.g. for a command line's choices)."""


class TrainerConfig(BaseModel):
    """Lightning ``Trainer`` arguments (``trainer.<name>=value`` on the command line).

    Unknown keys are errors (``extra="forbid"``) and values are checked on assignment too.
    ``model_dump()`` gives keyword arguments for ``lightning.pytorch.Trainer`` (the caller pops
    ``enable_progress_bar`` if it decides progress bars itself).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    accelerator: str = Field(default="auto", description="'cpu', 'gpu', 'auto', …")
    devices: int | str | list[int] = Field(default="auto", description="Devices per node.")
    num_nodes: PositiveInt = Field(default=1, description="Nodes.")
    strategy: str = Field(default="auto", description="'auto', 'ddp', 'ddp_spawn', …")
    precision: Precision = Field(default="32-true", description="Numerical precision.")
    max_steps: int = Field(default=-1, ge=-1, description="Optimiser steps; -1 for no limit.")
    max_epochs: int | None = Field(default=None, ge=-1, description="Epochs; None for no limit.")
    max_time: str | None = Field(
        default=None, description="Wall-clock limit 'DD:HH:MM:SS'; stops cleanly with a checkpoint."
    )
    val_check_interval: int | float | None = Field(
        default=None,
        description="Validate every N training batches (int) or fraction of an epoch (float).",
    )
    check_val_every_n_epoch: PositiveInt | None = Field(
        default=1, description="Validate every N epochs (None with val_check_interval in steps)."
    )
    log_every_n_steps: PositiveInt = Field(default=10, description="Logging interval.")
    gradient_clip_val: float | None = Field(default=12.0, description="Gradient norm clip.")
    accumulate_grad_batches: PositiveInt = Field(default=1, description="Gradient accumulation.")
    num_sanity_val_steps: Annotated[int, Field(ge=-1)] = Field(
        default=0, description="Sanity checks."
    )
    deterministic: bool | Literal["warn"] = Field(default=False, description="Deterministic ops.")
    benchmark: bool | None = Field(default=None, description="cudnn.benchmark.")
    enable_progress_bar: bool = Field(default=True, description="Show progress bars.")
    limit_val_batches: int | float | None = Field(default=None, description="Validation batches.")

    @field_validator("max_time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = value.split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"max_time {value!r} must be 'DD:HH:MM:SS'")
        return value
