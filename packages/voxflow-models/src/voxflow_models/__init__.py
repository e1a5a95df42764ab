"""voxflow-models: segmentation networks and contrastive encoders as plain PyTorch modules.

``build_model(name, **kwargs)`` builds any registered model; ``list_models()`` names them.
No Lightning: every model is an ``nn.Module``. Every model checks its input where it enters
(``InputSpec``): a wrong rank, channel count or spatial size raises ``InputShapeError``.
"""

from importlib.metadata import version

from ._contrastive import (
    ContrastiveEncoder,
    build_contrastive_convnext,
    build_contrastive_resnet,
    build_contrastive_resnet25d,
)
from ._errors import InputShapeError, ModelConfigError, ModelError, UnknownModelError
from ._inputs import InputSpec
from ._registry import build_model, input_spec_of, list_models, model_arguments, register_model
from ._segmentation import MultiHeadSegmenter, build_multihead
from ._stem import ZStackStem, build_unet25d

__version__ = version("voxflow-models")

__all__ = [
    "ContrastiveEncoder",
    "InputShapeError",
    "InputSpec",
    "ModelConfigError",
    "ModelError",
    "MultiHeadSegmenter",
    "UnknownModelError",
    "ZStackStem",
    "__version__",
    "build_contrastive_convnext",
    "build_contrastive_resnet",
    "build_contrastive_resnet25d",
    "build_model",
    "build_multihead",
    "build_unet25d",
    "input_spec_of",
    "list_models",
    "model_arguments",
    "register_model",
]
