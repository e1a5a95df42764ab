"""A sequence of transforms with one generator, train/eval mode, replay, fused resampling and
inversion of its geometry (for test-time augmentation)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

from ._base import Params, Transform, check_params, from_batch, global_seed, to_batch
from ._batch import Batch, spatial_layout
from ._deform import CenterCrop, RandElastic
from ._errors import BatchError, TransformConfigError
from ._resample import SpatialPlan, resample
from ._spatial import SpatialTransform

logger = logging.getLogger(__name__)


class _Fusion:
    """Spatial transforms collected for one resample."""

    def __init__(self, plan: SpatialPlan, keys: tuple[str, ...]) -> None:
        self.plan, self.keys = plan, keys
        self.modes: dict[str, str] = {}
        self.padding_mode = "zeros"
        self.resamples = False  # whether a transform with modes and padding joined

    def accepts(self, transform: SpatialTransform, keys: tuple[str, ...]) -> bool:
        if keys != self.keys:
            return False
        if isinstance(transform, RandElastic) and self.plan.field is not None:
            return False
        return not (
            transform.resamples
            and self.resamples
            and (transform.modes, transform.padding_mode) != (self.modes, self.padding_mode)
        )

    def add(self, transform: SpatialTransform, params: Params) -> None:
        transform.extend(self.plan, params)
        if transform.resamples:
            self.resamples = True
            self.modes, self.padding_mode = transform.modes, transform.padding_mode


class Pipeline(Randomizable):
    """Apply transforms in order with one seeded generator; consecutive spatial transforms are
    fused into one resample that computes only the output voxels.

    Args:
        transforms: voxflow transforms (their own ``batched`` and ``seed`` are not used).
        seed: seed of the pipeline's CPU ``torch.Generator``; ``None`` draws one from torch's
            global generator.
        batched: ``False`` for single-sample dictionaries ``(C, *spatial)`` (MONAI per-sample).

    Shapes:
        batch values: ``(B, C, *spatial)``; spatial keys end with the last crop's size.
    """

    def __init__(
        self, transforms: Sequence[Transform], *, seed: int | None = None, batched: bool = True
    ) -> None:
        self.transforms = list(transforms)
        for index, transform in enumerate(self.transforms):
            if not isinstance(transform, Transform):
                raise TransformConfigError(
                    f"Pipeline: transform {index} is {type(transform).__name__}, "
                    "expected a voxflow Transform"
                )
        self.batched = bool(batched)
        self.generator = torch.Generator()
        self.generator.manual_seed(global_seed() if seed is None else int(seed))
        self.last_params: list[Params] | None = None

    def train(self, mode: bool = True) -> Pipeline:
        """Set train (``True``) or eval mode on every transform."""
        for transform in self.transforms:
            transform.train(mode)
        return self

    def eval(self) -> Pipeline:
        """Eval mode on every transform: augmentations off, crops centred."""
        return self.train(False)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Draw parameters for every transform and apply them; kept in ``last_params``."""
        batch = to_batch(data, self.batched, "Pipeline")
        params = self._draw(batch)
        out = self._run(batch, params)
        self.last_params = params
        return from_batch(data, out, self.batched)

    def draw(self, data: Mapping[str, Any]) -> list[Params]:
        """Draw the parameters of every transform for ``data`` without applying them."""
        return self._draw(to_batch(data, self.batched, "Pipeline"))

    def replay(self, data: Mapping[str, Any], params: Sequence[Params]) -> dict[str, Any]:
        """Apply parameters of an earlier call (``last_params``) to ``data``."""
        self._check_count("Pipeline.replay", params)
        batch = to_batch(data, self.batched, "Pipeline")
        return from_batch(data, self._run(batch, list(params)), self.batched)

    def invert(
        self, data: Mapping[str, Any], params: Sequence[Params], keys: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Undo the geometry of an earlier call on ``data`` (e.g. predictions of an augmented
        batch): flips, rot90 and affine maps are inverted in one resample; intensity transforms
        are ignored. Crops and elastic deformations cannot be inverted and raise.

        Shapes:
            data values: ``(B, C, *spatial)`` in the augmented space; the result has the same
            shape, in the space of the batch before augmentation.
        """
        self._check_count("Pipeline.invert", params)
        batch = to_batch(data, self.batched, "Pipeline.invert")
        target = (
            tuple(keys)
            if keys is not None
            else tuple(k for k, v in batch.items() if isinstance(v, torch.Tensor))
        )
        batch_size, spatial = spatial_layout(batch, target, "Pipeline.invert")
        plan = SpatialPlan.identity(batch_size, spatial)
        modes: dict[str, str] = {}
        padding_mode = "zeros"
        for transform, drawn in zip(self.transforms, params, strict=True):
            if not isinstance(transform, SpatialTransform):
                continue
            if isinstance(transform, CenterCrop | RandElastic):
                raise BatchError(f"Pipeline.invert: {type(transform).__name__} cannot be inverted")
            check_params(type(transform).__name__, drawn, batch_size)
            transform.extend(plan, drawn)
            if transform.resamples:
                modes, padding_mode = transform.modes, transform.padding_mode
        inverse = SpatialPlan.identity(batch_size, spatial)
        inverse.then_matrix(torch.linalg.inv(plan.post), spatial)
        out = resample(batch, target, inverse, modes, padding_mode)
        return from_batch(data, out, self.batched)

    def _check_count(self, where: str, params: Sequence[Params]) -> None:
        if len(params) != len(self.transforms):
            raise BatchError(
                f"{where}: {len(params)} parameter sets for {len(self.transforms)} transforms"
            )

    def _draw(self, batch: Batch) -> list[Params]:
        """Parameters for every transform; spatial shapes follow the chain through its crops."""
        drawn: list[Params] = []
        plan: SpatialPlan | None = None
        for transform in self.transforms:
            if plan is None:
                batch_size, spatial = transform.layout(batch)
                plan = SpatialPlan.identity(batch_size, spatial)
            params = transform.sample(plan.post.shape[0], plan.output_shape, self.generator)
            if isinstance(transform, SpatialTransform):
                transform.extend(plan, params)
            drawn.append(params)
        return drawn

    def _run(self, batch: Batch, params: list[Params]) -> Batch:
        fusion: _Fusion | None = None
        for index, (transform, drawn) in enumerate(zip(self.transforms, params, strict=True)):
            if isinstance(transform, SpatialTransform):
                keys = transform.target_keys(batch)
                if fusion is not None and not fusion.accepts(transform, keys):
                    batch, fusion = self._flush(batch, fusion), None
                if fusion is None:
                    batch_size, spatial = spatial_layout(batch, keys, type(transform).__name__)
                    fusion = _Fusion(SpatialPlan.identity(batch_size, spatial), keys)
                check_params(
                    f"Pipeline transform {index} ({type(transform).__name__})",
                    drawn,
                    fusion.plan.post.shape[0],
                )
                fusion.add(transform, drawn)
            else:
                if fusion is not None:
                    batch, fusion = self._flush(batch, fusion), None
                batch_size, _ = transform.layout(batch)
                check_params(
                    f"Pipeline transform {index} ({type(transform).__name__})", drawn, batch_size
                )
                batch = transform.apply(batch, drawn)
        if fusion is not None:
            batch = self._flush(batch, fusion)
        return batch

    @staticmethod
    def _flush(batch: Batch, fusion: _Fusion) -> Batch:
        logger.debug(
            "resampling %s: %s -> %s",
            fusion.keys,
            fusion.plan.input_shape,
            fusion.plan.output_shape,
        )
        return resample(batch, fusion.keys, fusion.plan, fusion.modes, fusion.padding_mode)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> Pipeline:
        """Seed the pipeline (MONAI ``Compose.set_random_state`` calls this)."""
        super().set_random_state(seed=seed, state=state)
        self.generator.manual_seed(int(self.R.randint(0, 2**31 - 1)))
        return self

    def randomize(self, data: Any) -> None:
        """Draw parameters for ``data`` into ``last_params`` (apply them with ``replay``)."""
        self.last_params = self.draw(data)
