"""voxflow-transforms: batched augmentation and normalisation of ``(B, C, *spatial)`` tensors.

Transforms are ``torch.nn.Module``s that take ``dict[str, Tensor]`` batches on any device, draw
independent parameters per sample from a seedable ``torch.Generator``, can replay drawn
parameters, and work inside MONAI ``Compose``. A ``Pipeline`` (a transform too) fuses
consecutive spatial transforms into one resample.
"""

from importlib.metadata import version

from ._base import BaseTransform, ParamKind, Params, Transform
from ._channels import ChannelDropout
from ._deform import CenterCrop, RandCrop, RandElastic
from ._errors import BatchError, TransformConfigError, TransformError
from ._filters import gaussian_smooth
from ._intensity import (
    IntensityTransform,
    RandBrightness,
    RandContrast,
    RandGamma,
    RandGaussianBlur,
    RandGaussianNoise,
    RandLowResolution,
)
from ._normalize import PercentileNormalize, WindowNormalize, ZScoreNormalize, percentiles
from ._pipeline import Pipeline
from ._resample import Interpolation, SpatialPlan
from ._spatial import RandAffine, RandFlip, RandRot90, SpatialTransform

__version__ = version("voxflow-transforms")

__all__ = [
    "BaseTransform",
    "BatchError",
    "CenterCrop",
    "ChannelDropout",
    "IntensityTransform",
    "Interpolation",
    "ParamKind",
    "Params",
    "PercentileNormalize",
    "Pipeline",
    "RandAffine",
    "RandBrightness",
    "RandContrast",
    "RandCrop",
    "RandElastic",
    "RandFlip",
    "RandGamma",
    "RandGaussianBlur",
    "RandGaussianNoise",
    "RandLowResolution",
    "RandRot90",
    "SpatialPlan",
    "SpatialTransform",
    "Transform",
    "TransformConfigError",
    "TransformError",
    "WindowNormalize",
    "ZScoreNormalize",
    "__version__",
    "gaussian_smooth",
    "percentiles",
]
