"""A sequence of transforms with one generator, train/eval mode, replay, fused resampling and
inversion of its geometry (for test-time augmentation)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import nn

from ._base import BaseTransform, Params, Transform
from ._batch import Batch
from ._errors import BatchError, TransformConfigError
from ._resample import Interpolation, SpatialPlan, resample

logger = logging.getLogger(__name__)


class _Fusion:
    """Consecutive spatial transforms on the same keys, collected for one resample."""

    def __init__(self, plan: SpatialPlan, keys: tuple[str, ...]) -> None:
        self.plan, self.keys = plan, keys
        self.interpolation: Interpolation | None = None  # of the members that interpolate

    def accepts(self, transform: Transform, keys: tuple[str, ...]) -> bool:
        """Whether ``transform`` can join: same keys, at most one displacement field, and the
        same interpolation as the members that interpolate."""
        if keys != self.keys:
            return False
        if transform.displacement_field and self.plan.field is not None:
            return False
        found = transform.interpolation()
        return found is None or self.interpolation is None or found == self.interpolation

    def add(self, transform: Transform, params: Params) -> None:
        transform.extend(self.plan, params)
        found = transform.interpolation()
        if found is not None:
            self.interpolation = found

    def resample(self, batch: Batch) -> Batch:
        logger.debug(
            "resampling %s: %s -> %s", self.keys, self.plan.input_shape, self.plan.output_shape
        )
        # Without a member that interpolates, the plan maps integer voxels to integer voxels.
        modes, padding_mode = self.interpolation or Interpolation({}, "zeros")
        return resample(batch, self.keys, self.plan, modes, padding_mode)


class Pipeline(BaseTransform[list[Params]]):
    """Apply transforms in order with one seeded generator; consecutive spatial transforms are
    fused into one resample that computes only the output voxels.

    A ``Pipeline`` is an ``nn.Module`` whose transforms are submodules: ``.train()``/``.eval()``
    (also through a ``LightningModule`` holding it) switch augmentation on and off, and
    ``.to(device)`` moves what they cache. Its parameters are one dictionary per transform.

    Args:
        transforms: single voxflow transforms (pipelines do not nest; their own ``batched`` and
            ``seed`` are not used).
        seed: seed of the pipeline's CPU ``torch.Generator``; ``None`` draws one from torch's
            global generator.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)`` (MONAI per-sample).

    Shapes:
        batch values: ``(B, C, *spatial)``; spatial keys end with the last crop's size.
    """

    def __init__(
        self, transforms: Sequence[Transform], *, seed: int | None = None, batched: bool = True
    ) -> None:
        super().__init__(batched=batched, seed=seed)
        if isinstance(transforms, nn.Module) or not isinstance(transforms, Sequence):
            raise TransformConfigError(
                f"Pipeline: transforms must be a list of voxflow Transforms, found "
                f"{type(transforms).__name__}"
            )
        for index, transform in enumerate(transforms):
            if not isinstance(transform, Transform):
                hint = (
                    " (pipelines do not nest: list its transforms instead)"
                    if isinstance(transform, BaseTransform)
                    else ""
                )
                raise TransformConfigError(
                    f"Pipeline: transform {index} is {type(transform).__name__}, "
                    f"expected a voxflow Transform{hint}"
                )
        self.transforms = nn.ModuleList(transforms)

    def members(self) -> list[Transform]:
        """The transforms, in order."""
        return [cast(Transform, transform) for transform in self.transforms]

    # ---------------------------------------------------------------- BaseTransform hooks
    def draw_batch(self, batch: Batch, generator: torch.Generator) -> list[Params]:
        """Parameters for every transform; spatial shapes follow the chain through its crops."""
        drawn: list[Params] = []
        layout: tuple[int, tuple[int, ...]] | None = None
        for transform in self.members():
            batch_size, spatial = transform.layout(batch) if layout is None else layout
            drawn.append(transform.sample(batch_size, spatial, generator))
            layout = (batch_size, transform.output_shape(spatial))
        return drawn

    def apply_batch(self, batch: Batch, params: list[Params]) -> Batch:
        """Apply checked parameters; consecutive spatial transforms on the same keys share one
        resample, any other transform between them ends it."""
        fusion: _Fusion | None = None
        for index, (transform, drawn) in enumerate(self.steps(params, "Pipeline")):
            where = f"Pipeline transform {index} ({type(transform).__name__})"
            if transform.spatial:
                keys = transform.target_keys(batch)
                if fusion is not None and not fusion.accepts(transform, keys):
                    batch, fusion = fusion.resample(batch), None
                if fusion is None:
                    batch_size, spatial = transform.layout(batch)
                    fusion = _Fusion(SpatialPlan.identity(batch_size, spatial), keys)
                transform.check_params(drawn, fusion.plan.post.shape[0], where)
                fusion.add(transform, drawn)
            else:
                if fusion is not None:
                    batch, fusion = fusion.resample(batch), None
                batch_size, _ = transform.layout(batch)
                transform.check_params(drawn, batch_size, where)
                batch = transform.apply_params(batch, drawn)
        return batch if fusion is None else fusion.resample(batch)

    def steps(self, params: list[Params], where: str) -> list[tuple[Transform, Params]]:
        """Pair each transform with its parameters; raise unless there is one set for each."""
        if isinstance(params, Mapping) or not isinstance(params, Sequence):
            raise BatchError(
                f"{where}: parameters must be a list of one dict per transform, found "
                f"{type(params).__name__}"
            )
        members = self.members()
        if len(params) != len(members):
            raise BatchError(f"{where}: {len(params)} parameter sets for {len(members)} transforms")
        return list(zip(members, params, strict=True))

    def extra_repr(self) -> str:
        return f"batched={self.batched}"
