"""voxflow-utils: configuration, losses and distributed helpers shared by the applications."""

from importlib.metadata import version

from ._config import apply_overrides, load_config, read_config_file
from ._distributed import gather_with_gradient
from ._errors import ConfigError, LossInputError, VoxflowUtilsError
from ._losses import DeepSupervisionLoss, NTXentHCLLoss, NTXentLoss, deep_supervision_weights

__version__ = version("voxflow-utils")

__all__ = [
    "ConfigError",
    "DeepSupervisionLoss",
    "LossInputError",
    "NTXentHCLLoss",
    "NTXentLoss",
    "VoxflowUtilsError",
    "__version__",
    "apply_overrides",
    "deep_supervision_weights",
    "gather_with_gradient",
    "load_config",
    "read_config_file",
]
