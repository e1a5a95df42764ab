"""voxflow-utils: configuration, logging, losses, distributed helpers, callbacks, training-run
helpers and plots.

Importing the package loads neither Lightning, matplotlib nor torch: the callbacks, the
training-run helpers, the plots, the losses and the distributed helper are imported when first
used (module ``__getattr__``), so a configuration loader or a CLI's ``--help`` does not pay
seconds and gigabytes for them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from ._config import apply_overrides, load_config, read_config_file
from ._errors import (
    CallbackError,
    ConfigError,
    LossInputError,
    PlotInputError,
    VoxflowUtilsError,
    WriteInputError,
)
from ._files import write_atomic
from ._logging import current_rank, is_rank_zero, setup_logging
from ._trainer_config import PRECISIONS, Precision, TrainerConfig
from ._workers import loader_start_method

if TYPE_CHECKING:
    from ._callbacks import PreviewCallback
    from ._distributed import gather_with_gradient
    from ._losses import (
        DeepSupervisionLoss,
        NTXentHCLLoss,
        NTXentLoss,
        deep_supervision_weights,
    )
    from ._plots import plot_embedding_scatter, plot_preview, plot_training_curves, save_figure
    from ._training import (
        FinalCheckpoint,
        make_loggers,
        make_trainer,
        merge_csv_logs,
        quiet_lightning,
    )

__version__ = version("voxflow-utils")

_LAZY = {
    "PreviewCallback": "._callbacks",  # Lightning
    "DeepSupervisionLoss": "._losses",  # torch
    "NTXentHCLLoss": "._losses",
    "NTXentLoss": "._losses",
    "deep_supervision_weights": "._losses",
    "gather_with_gradient": "._distributed",
    "plot_embedding_scatter": "._plots",  # matplotlib
    "plot_preview": "._plots",
    "plot_training_curves": "._plots",
    "save_figure": "._plots",
    "FinalCheckpoint": "._training",  # Lightning
    "make_loggers": "._training",
    "make_trainer": "._training",
    "merge_csv_logs": "._training",
    "quiet_lightning": "._training",
}

__all__ = [
    "CallbackError",
    "ConfigError",
    "DeepSupervisionLoss",
    "FinalCheckpoint",
    "LossInputError",
    "NTXentHCLLoss",
    "NTXentLoss",
    "PRECISIONS",
    "PlotInputError",
    "Precision",
    "PreviewCallback",
    "TrainerConfig",
    "VoxflowUtilsError",
    "WriteInputError",
    "__version__",
    "apply_overrides",
    "current_rank",
    "deep_supervision_weights",
    "gather_with_gradient",
    "is_rank_zero",
    "load_config",
    "loader_start_method",
    "make_loggers",
    "make_trainer",
    "merge_csv_logs",
    "plot_embedding_scatter",
    "plot_preview",
    "plot_training_curves",
    "quiet_lightning",
    "read_config_file",
    "save_figure",
    "setup_logging",
    "write_atomic",
]


def __getattr__(name: str) -> Any:
    """Import the callbacks, the training-run helpers, the plots, the losses and the
    distributed helper on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
