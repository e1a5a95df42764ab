"""The transform protocol: ``torch.nn.Module``s that draw per-sample parameters, then apply them.

``BaseTransform`` is what a single ``Transform`` and a ``Pipeline`` share, all at the level of
a batch dictionary: a call (``forward``) draws parameters and applies them and keeps them in
``last_params``; ``draw`` only draws; ``replay`` applies given parameters again (to another
batch, after a change of device, to a prediction); ``invert`` undoes their geometry. Both are
``nn.Module``s, so ``.train()``/``.eval()`` on a module holding them switches augmentation on
and off, ``.to(device)`` moves the tensors they cache, and both are MONAI ``Randomizable``.

A ``Transform`` splits randomness from computation (kornia's and MONAI's shape): ``draw_params``
returns a dictionary of per-sample parameter tensors whose first axis is the batch, and
``apply_params`` computes the result from a batch and such a dictionary. It also states what a
``Pipeline`` needs to know about it (``spatial``, ``invertible``, ``displacement_field``,
``output_shape``, ``extend``, ``interpolation``): the pipeline asks, it never checks classes.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Self, TypeVar

import numpy as np
import torch
from monai.transforms import Randomizable
from torch import nn

from ._batch import (
    Batch,
    check_flag,
    check_keys,
    check_probability,
    check_seed,
    spatial_layout,
    unbatch,
)
from ._errors import BatchError, TransformError
from ._resample import Interpolation, SpatialPlan, resample

logger = logging.getLogger(__name__)

Params = dict[str, torch.Tensor]
"""Parameters drawn for one call: name -> tensor whose first axis is the batch. ``apply``
(``(B,)`` bool) says which samples the transform acts on."""

ParamKind = Literal["bool", "integer", "float"]
"""What a parameter tensor holds; float parameters must be finite."""

P = TypeVar("P")


def global_seed() -> int:
    """A seed drawn from torch's global generator, so that ``torch.manual_seed()`` makes an
    unseeded transform reproducible, as users expect from torch code."""
    return int(torch.randint(0, 2**62, (1,)).item())


class BaseTransform(nn.Module, Randomizable, ABC, Generic[P]):
    """What every voxflow transform and a ``Pipeline`` share: calling, drawing, replaying and
    inverting on batch dictionaries, the train/eval mode, seeding and MONAI compatibility.

    Args:
        batched: ``True``: values are ``(B, C, *spatial)``. ``False``: values are one sample
            ``(C, *spatial)``, as inside a per-sample MONAI ``Compose`` in a DataLoader worker.
        seed: seed of the CPU ``torch.Generator`` that parameters are drawn from (an integer in
            ``[0, 2**64)``); ``None`` draws one from torch's global generator.

    Shapes:
        batch values: ``(B, C, Z, Y, X)`` or ``(B, C, Y, X)``; results keep shape (crops
        excepted) and dtype. Values that are not tensors pass through.
    """

    def __init__(self, *, batched: bool = True, seed: int | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.batched = check_flag(f"{name}(batched=...)", batched)
        seed = check_seed(f"{name}(seed=...)", seed)
        self.generator = torch.Generator()
        self.generator.manual_seed(global_seed() if seed is None else seed)
        self.last_params: P | None = None

    if TYPE_CHECKING:  # nn.Module types __call__ as Callable[..., Any]; calling runs forward

        def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]: ...

    # ---------------------------------------------------------------- what subclasses define
    @abstractmethod
    def draw_batch(self, batch: Batch, generator: torch.Generator) -> P:
        """Draw parameters for ``batch`` (batched form), honouring the train/eval mode."""

    @abstractmethod
    def apply_batch(self, batch: Batch, params: P) -> Batch:
        """Check ``params`` against ``batch`` and return the transformed batch (batched form)."""

    @abstractmethod
    def steps(self, params: P, where: str) -> list[tuple[Transform, Params]]:
        """The single transforms with their parameters, in order (what ``invert`` undoes)."""

    # ---------------------------------------------------------------- calling
    def forward(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Draw parameters for ``data`` and apply them; they are kept in ``last_params``.

        Shapes:
            data values: ``(B, C, *spatial)`` (``(C, *spatial)`` when not ``batched``).
        """
        batch = self._as_batch(data)
        params = self.draw_batch(batch, self.generator)
        out = self.apply_batch(batch, params)
        self.last_params = params
        return from_batch(data, out, self.batched)

    def draw(self, data: Mapping[str, Any]) -> P:
        """Draw the parameters for ``data`` without applying them (apply with ``replay``)."""
        return self.draw_batch(self._as_batch(data), self.generator)

    def replay(self, data: Mapping[str, Any], params: P) -> dict[str, Any]:
        """Apply parameters drawn earlier (``last_params``, ``draw``) to ``data``.

        Raises:
            BatchError: a parameter is missing, unexpected, of another batch size or kind, not
                finite, or out of range; the message names the transform and the parameter.
        """
        return from_batch(data, self.apply_batch(self._as_batch(data), params), self.batched)

    def invert(
        self, data: Mapping[str, Any], params: P, keys: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Undo the geometry of an earlier call on ``data`` (e.g. predictions of an augmented
        batch) in one resample. Transforms that do not move voxels are ignored; spatial ones
        that are not ``invertible`` (crops, elastic deformation) raise.

        Args:
            keys: the keys to invert; ``None`` means every tensor of ``data``.

        Shapes:
            data values: ``(B, C, *spatial)`` in the augmented space; the result has the same
            shape, in the space of the batch before augmentation.
        """
        where = f"{type(self).__name__}.invert"
        batch = to_batch(data, self.batched, where)
        target = (
            check_keys(f"{where}(keys=...)", keys)
            if keys is not None
            else tuple(k for k, v in batch.items() if isinstance(v, torch.Tensor))
        )
        out = invert_steps(batch, target, self.steps(params, where), where)
        return from_batch(data, out, self.batched)

    def _as_batch(self, data: Mapping[str, Any]) -> Batch:
        return to_batch(data, self.batched, type(self).__name__)

    # ---------------------------------------------------------------- MONAI compatibility
    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> Self:
        """Seed the transform (MONAI ``Compose.set_random_state`` and ``DataLoader`` workers
        call this); the parameters' generator is seeded from MONAI's random state."""
        check_seed(f"{type(self).__name__}.set_random_state(seed=...)", seed)
        super().set_random_state(seed=seed, state=state)
        self.generator.manual_seed(int(self.R.randint(0, 2**31 - 1)))
        return self

    def randomize(self, data: Any) -> None:
        """Draw parameters for ``data`` into ``last_params`` without applying them."""
        self.last_params = self.draw(data)


class Transform(BaseTransform[Params]):
    """Base of every single voxflow transform.

    Args:
        keys: the batch keys the transform acts on; ``None`` (spatial transforms only) means
            every tensor of the batch (other values, such as names, pass through).
        prob: probability that a sample is transformed (drawn per sample).
        batched: see ``BaseTransform``.
        seed: seed of the transform's own generator; a ``Pipeline`` draws from its own instead.

    Shapes:
        batch values: ``(B, C, Z, Y, X)`` or ``(B, C, Y, X)``, any dtype the transform accepts;
        results keep shape (crops excepted) and dtype.
    """

    augmentation: ClassVar[bool] = True
    """Random augmentations are the identity in eval mode; normalisation and crops are not."""
    spatial: ClassVar[bool] = False
    """Whether the transform moves voxels: it is then a map from output to input voxel indices
    (``extend``) that a ``Pipeline`` fuses with its neighbours into one resample."""
    invertible: ClassVar[bool] = True
    """Whether ``invert`` can undo the transform's geometry (one without geometry has nothing
    to undo); crops and displacement fields cannot be undone."""
    displacement_field: ClassVar[bool] = False
    """Whether its map carries a displacement field (a resample holds at most one)."""

    def __init__(
        self,
        keys: Sequence[str] | str | None,
        prob: float = 1.0,
        *,
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(batched=batched, seed=seed)
        name = type(self).__name__
        self.keys = None if keys is None else check_keys(f"{name}(keys=...)", keys)
        self.prob = check_probability(f"{name}(prob=...)", prob)

    # ---------------------------------------------------------------- what subclasses define
    @abstractmethod
    def parameter_kinds(self) -> dict[str, ParamKind]:
        """Every parameter a draw holds (``apply`` included) and what kind of tensor it is."""

    @abstractmethod
    def draw_params(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        """Draw the parameters of ``batch_size`` samples of spatial shape ``spatial_shape``."""

    @abstractmethod
    def apply_params(self, batch: Batch, params: Params) -> Batch:
        """Return a new batch with checked ``params`` applied to this transform's keys."""

    def identity_params(self, batch_size: int, spatial_shape: tuple[int, ...]) -> Params:
        """Parameters that leave every sample unchanged: what augmentations draw in eval mode.

        Raises:
            TransformError: the transform is not an augmentation (it applies in eval mode).
        """
        raise TransformError(
            f"{type(self).__name__} applies in eval mode too; it has no identity parameters"
        )

    def output_shape(self, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial shape the transform makes of ``spatial_shape`` (crops change it)."""
        return spatial_shape

    def extend(self, plan: SpatialPlan, params: Params) -> None:
        """Append this transform's map for ``params`` to ``plan`` (spatial transforms only)."""
        raise TransformError(f"{type(self).__name__} does not move voxels; it has no map")

    def interpolation(self) -> Interpolation | None:
        """How the map's result is interpolated, when it can leave integer coordinates."""
        return None

    # ---------------------------------------------------------------- modes
    @property
    def active(self) -> bool:
        """Whether calls transform anything in the current mode."""
        return self.training or not self.augmentation

    # ---------------------------------------------------------------- the protocol
    def target_keys(self, batch: Mapping[str, Any]) -> tuple[str, ...]:
        """The keys this transform acts on in ``batch`` (``keys=None``: every tensor)."""
        if self.keys is not None:
            return self.keys
        return tuple(k for k, v in batch.items() if isinstance(v, torch.Tensor))

    def layout(self, batch: Mapping[str, Any]) -> tuple[int, tuple[int, ...]]:
        """``(B, spatial_shape)`` of ``batch`` over this transform's keys, validated."""
        return spatial_layout(batch, self.target_keys(batch), type(self).__name__)

    def sample(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        """Draw parameters, honouring the train/eval mode (eval: identity for augmentations)."""
        if not self.active:
            return self.identity_params(batch_size, spatial_shape)
        return self.draw_params(batch_size, spatial_shape, generator)

    def check_params(
        self, params: Mapping[str, Any], batch_size: int, where: str | None = None
    ) -> None:
        """Raise unless ``params`` holds exactly this transform's parameters, each with
        ``batch_size`` rows, of the right kind, and finite.

        Raises:
            BatchError: naming ``where`` (default: the transform), the parameter and the fault.
        """
        where = where or type(self).__name__
        if not isinstance(params, Mapping):
            raise BatchError(
                f"{where}: parameters must be a dict of tensors, found {type(params).__name__}"
            )
        kinds = self.parameter_kinds()
        missing = [name for name in kinds if name not in params]
        unexpected = sorted(str(name) for name in params if name not in kinds)
        if missing or unexpected:
            fault = (
                f"lack {', '.join(repr(m) for m in missing)}"
                if missing
                else f"hold unexpected {unexpected}"
            )
            raise BatchError(
                f"{where}: parameters {fault}; a {type(self).__name__} draw holds "
                f"{sorted(kinds)}, found {sorted(str(n) for n in params)}"
            )
        for name, kind in kinds.items():
            check_parameter(where, name, params[name], kind, batch_size)

    # ---------------------------------------------------------------- BaseTransform hooks
    def draw_batch(self, batch: Batch, generator: torch.Generator) -> Params:
        batch_size, spatial = self.layout(batch)
        return self.sample(batch_size, spatial, generator)

    def apply_batch(self, batch: Batch, params: Params) -> Batch:
        batch_size, _ = self.layout(batch)
        self.check_params(params, batch_size)
        return self.apply_params(batch, params)

    def steps(self, params: Params, where: str) -> list[tuple[Transform, Params]]:
        return [(self, params)]

    def extra_repr(self) -> str:
        return f"keys={self.keys}, prob={self.prob}"


_KIND_CHECKS = {
    "bool": lambda value: value.dtype == torch.bool,
    "integer": lambda value: (
        not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    ),
    "float": lambda value: value.is_floating_point(),
}


def check_parameter(where: str, name: str, value: Any, kind: ParamKind, batch_size: int) -> None:
    """Raise unless ``value`` is a tensor of ``kind`` with ``batch_size`` rows (finite when
    float)."""
    if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != batch_size:
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise BatchError(
            f"{where}: parameter '{name}' must have {batch_size} rows (the batch size), "
            f"found {found}"
        )
    if not _KIND_CHECKS[kind](value):
        article = "an" if kind == "integer" else "a"
        raise BatchError(
            f"{where}: parameter '{name}' must be {article} {kind} tensor, found {value.dtype}"
        )
    if kind == "float":
        bad = ~torch.isfinite(value.reshape(batch_size, -1)).all(dim=1)
        if bool(bad.any()):
            raise BatchError(
                f"{where}: parameter '{name}' holds non-finite values (NaN or inf) in sample(s) "
                f"{bad.nonzero().flatten().tolist()}"
            )


def invert_steps(
    batch: Batch, keys: tuple[str, ...], steps: Sequence[tuple[Transform, Params]], where: str
) -> Batch:
    """Resample ``keys`` of ``batch`` through the inverse of the steps' composed maps.

    Shapes:
        batch[key]: ``(B, C, *spatial)``, returned with the same shape.
    """
    batch_size, spatial = spatial_layout(batch, keys, where)
    plan = SpatialPlan.identity(batch_size, spatial)
    interpolation = Interpolation({}, "zeros")
    for index, (transform, params) in enumerate(steps):
        name = f"{where}: transform {index} ({type(transform).__name__})"
        if not transform.spatial:
            continue  # intensity: no geometry to undo
        if not transform.invertible:
            raise BatchError(
                f"{name}: {type(transform).__name__} cannot be inverted; only maps onto the same "
                "grid without a displacement field (flips, rot90, affine maps) can"
            )
        transform.check_params(params, batch_size, name)
        transform.extend(plan, params)
        interpolation = transform.interpolation() or interpolation
    matrices, info = torch.linalg.inv_ex(plan.post)
    if bool((info != 0).any()):
        raise BatchError(
            f"{where}: the composed map of sample(s) {info.nonzero().flatten().tolist()} is "
            "singular and cannot be inverted"
        )
    inverse = SpatialPlan.identity(batch_size, spatial)
    inverse.then_matrix(matrices, spatial)
    return resample(batch, keys, inverse, interpolation.modes, interpolation.padding_mode)


def to_batch(data: Mapping[str, Any], batched: bool, where: str) -> Batch:
    """Tensors of ``data`` in batched form (a single sample gains a batch axis of 1)."""
    if not isinstance(data, Mapping):
        raise BatchError(f"{where}: expected a dict of tensors, found {type(data).__name__}")
    batch: Batch = {}
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            # MONAI MetaTensors become plain tensors: the transforms do not track metadata.
            value = value.as_subclass(torch.Tensor)
            batch[key] = value if batched else value.unsqueeze(0)
        else:
            batch[key] = value
    return batch


def from_batch(data: Mapping[str, Any], out: Batch, batched: bool) -> dict[str, Any]:
    """``data`` updated with ``out``, back in single-sample form when not ``batched``."""
    return {**data, **(out if batched else unbatch(out))}
