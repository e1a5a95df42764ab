"""What a network takes, checked where the input enters it.

MONAI's networks and torch's layers fail deep inside a forward pass on a wrong channel count,
rank or spatial size, with messages about convolution weights or concatenated skips. An
``InputSpec`` states the contract (``(B, in_channels, *spatial)`` float, ``spatial_dims`` axes,
sizes that are multiples of what the network divides by) and raises ``InputShapeError`` that
says what was expected and what was found. Networks registered as they are get it as a forward
pre-hook, which leaves their class and state-dict keys unchanged.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._errors import InputShapeError, ModelConfigError

_AXES = ("Z", "Y", "X")


def positive_int(where: str, name: str, value: Any) -> int:
    """Return ``value`` as an int, or raise ``ModelConfigError`` when it is not an integer >= 1.

    Args:
        where: the model, for the message (``"model 'unet'"``).
        name: the argument, for the message.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ModelConfigError(f"{where}: {name} must be an integer >= 1, found {value!r}")
    return int(value)


def spatial_dims_of(where: str, value: Any) -> int:
    """Return ``value`` as 2 or 3, or raise ``ModelConfigError``."""
    if isinstance(value, bool) or value not in (2, 3):
        raise ModelConfigError(f"{where}: spatial_dims must be 2 or 3, found {value!r}")
    return int(value)


def stride_product(strides: Sequence[Sequence[int] | int], spatial_dims: int) -> tuple[int, ...]:
    """Per spatial axis, the product of a network's strides (each an int or one per axis):
    what an encoder-decoder with skip connections needs its input sizes to be multiples of."""
    product = [1] * spatial_dims
    for stride in strides:
        per_axis = [stride] * spatial_dims if isinstance(stride, int) else list(stride)
        if len(per_axis) != spatial_dims:
            raise ModelConfigError(
                f"strides {list(strides)}: {stride!r} is not an int or {spatial_dims} ints"
            )
        product = [p * int(s) for p, s in zip(product, per_axis, strict=True)]
    return tuple(product)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The input a network takes: ``(B, in_channels, *spatial)``, floating.

    Args:
        model: the network's name, for messages.
        in_channels: channels of the input.
        spatial_dims: number of spatial axes.
        multiple_of: per spatial axis, what each size must be a multiple of (``()``: any).
        reason: why sizes must be multiples (``"the product of its strides"``).
        sizes: per spatial axis, a size the input must have (``None``: free; ``()``: all free).
    """

    model: str
    in_channels: int
    spatial_dims: int
    multiple_of: tuple[int, ...] = ()
    reason: str = ""
    sizes: tuple[int | None, ...] = ()

    def __post_init__(self) -> None:
        where = f"InputSpec({self.model!r})"
        positive_int(where, "in_channels", self.in_channels)
        if self.spatial_dims not in (1, 2, 3):
            raise ModelConfigError(
                f"{where}: spatial_dims must be 1, 2 or 3, found {self.spatial_dims!r}"
            )
        for name, values in (("multiple_of", self.multiple_of), ("sizes", self.sizes)):
            if values and len(values) != self.spatial_dims:
                raise ModelConfigError(
                    f"{where}: {name} must have one entry per spatial axis ({self.spatial_dims}), "
                    f"found {values}"
                )
        for value in self.multiple_of:
            positive_int(where, "multiple_of", value)

    def renamed(self, model: str) -> InputSpec:
        """The same contract under another name (a wrapper around the network)."""
        return dataclasses.replace(self, model=model)

    def expected(self) -> str:
        """The contract in words: ``(B, 1, Z, Y, X) float, spatial sizes multiples of ...``."""
        names = _AXES[-self.spatial_dims :]
        sizes = self.sizes or (None,) * self.spatial_dims
        axes = [
            name if size is None else str(size) for name, size in zip(names, sizes, strict=True)
        ]
        text = f"(B, {self.in_channels}, {', '.join(axes)}) float"
        if any(m > 1 for m in self.multiple_of):
            text += f" with spatial sizes multiples of {self.multiple_of}"
            text += f" ({self.reason})" if self.reason else ""
        return text

    def check(self, image: Any) -> None:
        """Raise ``InputShapeError`` unless ``image`` fits the contract.

        Shapes:
            image: ``(B, in_channels, *spatial)`` float with ``spatial_dims`` axes.
        """
        problem = self._problem(image)
        if problem:
            raise InputShapeError(f"{self.model} expects input {self.expected()}; found {problem}")

    def _problem(self, image: Any) -> str:
        if not isinstance(image, torch.Tensor):
            return f"a {type(image).__name__}, not a tensor"
        shape = tuple(image.shape)
        if image.ndim != self.spatial_dims + 2:
            return f"shape {shape} (rank {image.ndim}, expected {self.spatial_dims + 2})"
        if not image.is_floating_point():
            return f"dtype {image.dtype} (shape {shape})"
        if shape[0] == 0:
            return f"an empty batch (shape {shape})"
        if shape[1] != self.in_channels:
            return f"{shape[1]} channels (shape {shape})"
        spatial = shape[2:]
        for axis, size in enumerate(self.sizes):
            if size is not None and spatial[axis] != size:
                return (
                    f"spatial size {spatial[axis]} on axis {axis}, expected {size} (shape {shape})"
                )
        multiple_of = self.multiple_of or (1,) * self.spatial_dims
        if any(s < m or s % m for s, m in zip(spatial, multiple_of, strict=True)):
            return f"spatial shape {spatial}"
        return ""


@dataclasses.dataclass(frozen=True)
class _InputCheck:
    """A forward pre-hook that checks the first positional (or only keyword) input."""

    spec: InputSpec

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        if args:
            self.spec.check(args[0])
        elif len(kwargs) == 1:
            self.spec.check(next(iter(kwargs.values())))
        else:
            raise InputShapeError(
                f"{self.spec.model} expects one input {self.spec.expected()}; found keyword "
                f"arguments {sorted(kwargs)}"
            )


def add_input_check(module: nn.Module, spec: InputSpec) -> None:
    """Check every input of ``module`` against ``spec`` before its forward runs (a forward
    pre-hook: the module's class, parameters and state-dict keys stay as they are)."""
    module.register_forward_pre_hook(_InputCheck(spec), with_kwargs=True)


def check_float_batch(model: str, image: Any) -> None:
    """Refuse anything but a floating ``(B, C, *spatial)`` tensor (models without a fixed
    input spec).

    Raises:
        InputShapeError: naming ``model`` and what was found.
    """
    if isinstance(image, torch.Tensor) and image.ndim >= 3 and image.is_floating_point():
        return
    found = (
        f"shape {tuple(image.shape)}, dtype {image.dtype}"
        if isinstance(image, torch.Tensor)
        else type(image).__name__
    )
    raise InputShapeError(f"{model} expects a float (B, C, *spatial) tensor; found {found}")
