"""voxflow-models: segmentation networks and contrastive encoders as plain PyTorch modules.

``build_model(name, **kwargs)`` builds any registered model; ``list_models()`` names them.
No Lightning: every model is an ``nn.Module``.
"""

from importlib.metadata import version

from ._contrastive import ContrastiveEncoder, build_contrastive_convnext, build_contrastive_resnet
from ._errors import InputShapeError, ModelConfigError, ModelError, UnknownModelError
from ._registry import build_model, list_models, model_arguments, register_model
from ._segmentation import MultiHeadSegmenter, build_multihead
from ._stem import ZStackStem, build_unet25d

__version__ = version("voxflow-models")

__all__ = [
    "ContrastiveEncoder",
    "InputShapeError",
    "ModelConfigError",
    "ModelError",
    "MultiHeadSegmenter",
    "UnknownModelError",
    "ZStackStem",
    "__version__",
    "build_contrastive_convnext",
    "build_contrastive_resnet",
    "build_model",
    "build_multihead",
    "build_unet25d",
    "list_models",
    "model_arguments",
    "register_model",
]
