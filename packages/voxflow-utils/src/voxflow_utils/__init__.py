"""voxflow-utils: configuration, logging, losses, distributed helpers, callbacks and plots."""

from importlib.metadata import version

from ._callbacks import PreviewCallback
from ._config import apply_overrides, load_config, read_config_file
from ._distributed import gather_with_gradient
from ._errors import ConfigError, LossInputError, VoxflowUtilsError
from ._logging import current_rank, setup_logging
from ._losses import DeepSupervisionLoss, NTXentHCLLoss, NTXentLoss, deep_supervision_weights
from ._plots import plot_embedding_scatter, plot_preview, plot_training_curves, save_figure

__version__ = version("voxflow-utils")

__all__ = [
    "ConfigError",
    "DeepSupervisionLoss",
    "LossInputError",
    "NTXentHCLLoss",
    "NTXentLoss",
    "PreviewCallback",
    "VoxflowUtilsError",
    "__version__",
    "apply_overrides",
    "current_rank",
    "deep_supervision_weights",
    "gather_with_gradient",
    "load_config",
    "plot_embedding_scatter",
    "plot_preview",
    "plot_training_curves",
    "read_config_file",
    "save_figure",
    "setup_logging",
]
