"""The stitching core: weighted blending of window predictions into one block, where they are.

[Accumulator][voxflow_slicing.Accumulator] has the shape of a Lightning ``predict_step``: feed it
batches of window predictions with their starts (numpy arrays, or torch tensors on any device),
then take the normalised block. Torch predictions are blended by torch on their device (on a GPU:
one transfer per block, none per window); numpy predictions are blended by threads that each own
a slab of the block, since numpy arithmetic releases the GIL.

torch stays optional: a tensor is recognised by its type's module and torch is imported only
then. We write this ourselves because MONAI's mergers (AvgMerger, ZarrAvgMerger) hold a
full-size count map, neither refuses voxels that no window covered nor checks shapes at the
first patch, and they run on one device per merger without a per-block plan.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ._checks import as_real, check_choice
from ._errors import StitchError
from ._importance import ImportanceMode, importance_profiles
from ._plan import Block
from ._protocol import trailing
from ._threads import default_workers

logger = logging.getLogger(__name__)


def _is_torch(value: object) -> bool:
    return type(value).__module__.startswith("torch")


def _where(predictions: Any) -> str:
    """``"numpy"`` or the torch device of ``predictions``, e.g. ``"torch cuda:0"``."""
    return f"torch {predictions.device}" if _is_torch(predictions) else "numpy"


@functools.lru_cache(maxsize=16)
def _numpy_weights(patch: tuple[int, ...], mode: str, sigma_scale: float) -> np.ndarray:
    """The ``(*patch)`` float32 importance map, cached per patch size and mode."""
    profiles = importance_profiles(patch, mode, sigma_scale=sigma_scale)  # type: ignore[arg-type]
    weights = profiles[0].astype(np.float32)
    for profile in profiles[1:]:
        weights = np.multiply.outer(weights, profile.astype(np.float32))
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=16)
def _torch_weights(patch: tuple[int, ...], mode: str, sigma_scale: float, device: Any) -> Any:
    """The importance map as a float32 tensor on ``device``, cached per patch, mode and device."""
    import torch

    return torch.from_numpy(_numpy_weights(patch, mode, sigma_scale).copy()).to(device)


class Accumulator:
    """Blend window predictions of one block with importance weights and normalise them.

    Example (a Lightning ``predict_step`` or any loop)::

        accumulator = Accumulator(block, mode="gaussian")
        for first in range(0, len(block.windows), 8):
            starts = block.windows[first : first + 8]
            accumulator.add(model(batch_of(starts)), starts)
        probabilities = accumulator.result()  # (*out, *block.region_shape)

    Args:
        block: The block, from a [BlockPlan][voxflow_slicing.BlockPlan]; its windows are the
            ones to add.
        mode: Importance weights, ``"gaussian"``, ``"hann"`` or ``"constant"`` (see
            [importance_map][voxflow_slicing.importance_map]).
        sigma_scale: Gaussian sigma as a fraction of the patch size.

    Raises:
        StitchError: A block that is not a Block, an unknown mode or a bad sigma_scale.
    """

    def __init__(
        self, block: Block, *, mode: ImportanceMode = "gaussian", sigma_scale: float = 0.125
    ) -> None:
        if not isinstance(block, Block):
            raise StitchError(
                f"block must be a Block of a BlockPlan (from block_plan), found "
                f"{type(block).__name__}"
            )
        check_choice(mode, "mode", ("constant", "gaussian", "hann"), error=StitchError)
        scale = as_real(sigma_scale, "sigma_scale", error=StitchError)
        if scale <= 0:
            raise StitchError(f"sigma_scale must be positive, found {scale}")
        self.block = block
        self.mode = mode
        self.sigma_scale = scale
        self._patch = block.patch
        self._starts = [np.unique(block.windows[:, axis]) for axis in range(len(block.patch))]
        self._added = np.zeros(len(block.windows), bool)
        self._out: tuple[int, ...] | None = None
        self._sum: Any = None
        self._torch = False
        self._device: Any = None
        self._where = ""

    @property
    def complete(self) -> bool:
        """Whether every window of the block has been added."""
        return bool(self._added.all())

    def add(self, predictions: Any, starts: Any) -> None:
        """Add a batch of window predictions.

        Args:
            predictions: ``(B, *out, *patch)`` of a real dtype (float16/bfloat16 are blended in
                float32): a numpy array or a torch tensor on any device; every batch of a
                block must share the type, device and ``out`` axes.
            starts: ``(B, D)`` integer window starts (numpy, a sequence or a CPU tensor), each
                one of ``block.windows``.

        Raises:
            StitchError: A shape that differs from ``(B, *out, *patch)`` or from the earlier
                batches' ``out``, a non-real dtype, another device, a start that is not one of
                the block's windows, or a window added twice.
        """
        torch_input = _is_torch(predictions)
        if not torch_input and not isinstance(predictions, np.ndarray):
            raise StitchError(
                f"predictions must be a numpy array or a torch tensor, found "
                f"{type(predictions).__name__}"
            )
        positions = self._positions(starts)
        shape = tuple(predictions.shape)
        d = len(self._patch)
        if (
            len(shape) < d + 1
            or shape[0] != len(positions)
            or shape[len(shape) - d :] != self._patch
        ):
            raise StitchError(
                f"{self.block.describe()}: predictions of shape {shape} for {len(positions)} "
                f"window start(s); expected ({len(positions)}, *out, "
                f"{', '.join(map(str, self._patch))})"
            )
        out = shape[1 : len(shape) - d]
        if torch_input:
            kind_ok = not predictions.dtype.is_complex and str(predictions.dtype) != "torch.bool"
        else:
            kind_ok = predictions.dtype.kind in "fiu"
        if not kind_ok:
            raise StitchError(
                f"{self.block.describe()}: predictions of dtype {predictions.dtype} are not real "
                f"numbers"
            )
        if self._sum is None:
            self._start(out, predictions, torch_input)
        elif out != self._out:
            raise StitchError(
                f"{self.block.describe()}: predictions with output axes {out} after earlier "
                f"batches with {self._out}"
            )
        elif _where(predictions) != self._where:
            raise StitchError(
                f"{self.block.describe()}: predictions on {_where(predictions)} after earlier "
                f"batches on {self._where}"
            )
        if self._torch:
            self._add_torch(predictions, positions)
        else:
            self._add_numpy(predictions, positions)
        self._added[positions] = True

    def _positions(self, starts: Any) -> np.ndarray:
        """Indices into ``block.windows`` of the given starts."""
        if _is_torch(starts):
            starts = starts.detach().cpu().numpy()
        array = np.asarray(starts)
        d = len(self._patch)
        if array.ndim != 2 or array.shape[1] != d or array.dtype.kind not in "iu":
            raise StitchError(
                f"{self.block.describe()}: starts must be a (B, {d}) integer array, found "
                f"shape {array.shape} of {array.dtype}"
            )
        counts = [len(s) for s in self._starts]
        places = []
        for axis, axis_starts in enumerate(self._starts):
            place = np.searchsorted(axis_starts, array[:, axis])
            place = np.minimum(place, len(axis_starts) - 1)
            bad = axis_starts[place] != array[:, axis]
            if bad.any():
                wrong = tuple(int(v) for v in array[np.argmax(bad)])
                raise StitchError(
                    f"{self.block.describe()}: window start {wrong} is "
                    f"not one of the block's windows (its starts along axis {axis} are "
                    f"{axis_starts.tolist()})"
                )
            places.append(place)
        positions = np.ravel_multi_index(places, counts)
        again = (
            self._added[positions]
            | (np.bincount(positions, minlength=len(self._added)) > 1)[positions]
        )
        if again.any():
            twice = tuple(int(v) for v in array[np.argmax(again)])
            raise StitchError(f"{self.block.describe()}: window {twice} added twice")
        return positions

    def _start(self, out: tuple[int, ...], predictions: Any, torch_input: bool) -> None:
        self._out = out
        self._where = _where(predictions)
        region = self.block.region_shape
        if torch_input:
            import torch

            self._torch = True
            self._device = predictions.device
            self._sum = torch.zeros((*out, *region), dtype=torch.float32, device=self._device)
        else:
            self._sum = np.zeros((*out, *region), np.float32)
            parts = min(default_workers(), region[0])
            self._slabs = [
                slice(region[0] * i // parts, region[0] * (i + 1) // parts) for i in range(parts)
            ]
            self._scratch = [np.empty((*out, *self._patch), np.float32) for _ in self._slabs]

    def _overlap(self, start: np.ndarray) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        inside, target = [], []
        for s, p, r in zip(start, self._patch, self.block.region, strict=True):
            lo, hi = max(int(s), r.start), min(int(s) + p, r.stop)
            inside.append(slice(lo - int(s), hi - int(s)))
            target.append(slice(lo - r.start, hi - r.start))
        return tuple(inside), tuple(target)

    def _add_torch(self, predictions: Any, positions: np.ndarray) -> None:
        weights = _torch_weights(self._patch, self.mode, self.sigma_scale, self._device)
        for item, position in enumerate(positions):
            inside, target = self._overlap(self.block.windows[position])
            window = predictions[item][trailing(inside)].float()
            self._sum[trailing(target)].addcmul_(window, weights[inside])

    def _add_numpy(self, predictions: np.ndarray, positions: np.ndarray) -> None:
        weights = _numpy_weights(self._patch, self.mode, self.sigma_scale)
        windows = self.block.windows[positions]

        def slab(owner: int) -> None:
            rows = self._slabs[owner]
            for start, window in zip(windows, predictions, strict=True):
                inside, target = self._overlap(start)
                lo, hi = max(target[0].start, rows.start), min(target[0].stop, rows.stop)
                if hi <= lo:
                    continue
                shift = inside[0].start - target[0].start
                inside = (slice(lo + shift, hi + shift), *inside[1:])
                target = (slice(lo, hi), *target[1:])
                part = self._scratch[owner][trailing(slice(0, s.stop - s.start) for s in inside)]
                np.multiply(window[trailing(inside)], weights[inside], out=part, casting="unsafe")
                self._sum[trailing(target)] += part

        run_parallel(slab, range(len(self._slabs)))

    def result(self) -> Any:
        """The blended block: weighted sum of predictions / sum of weights at every voxel.

        Returns:
            ``(*out, *block.region_shape)`` float32: a numpy array for numpy input, a torch
            tensor for tensors (on their device).

        Raises:
            StitchError: Nothing was added; some windows of the block were not added (the
                message names the region that received no prediction, if any); the blend
                holds NaN or infinite values.
        """
        if self._sum is None:
            raise StitchError(f"{self.block.describe()}: no predictions were added")
        if not self.complete:
            raise StitchError(self._missing_message())
        sums = self._weight_sums()
        if self._torch:
            import torch

            reciprocal = torch.ones((), dtype=torch.float64)
            for axis_sums in sums:
                reciprocal = torch.multiply(
                    reciprocal[..., None], torch.from_numpy(1.0 / axis_sums)
                )
            self._sum.mul_(reciprocal.to(device=self._device, dtype=torch.float32))
            bad = int((~torch.isfinite(self._sum)).sum().item())
        else:
            inner = np.ones((), np.float32)
            for axis_sums in sums[1:]:
                inner = np.multiply.outer(inner, (1.0 / axis_sums).astype(np.float32))
            reciprocal_rows = (1.0 / sums[0]).astype(np.float32)
            rest = [slice(None)] * (len(sums) - 1)
            counts = [0] * len(self._slabs)

            def normalise(owner: int) -> None:
                # Row by row, so the block's weight map is never materialised whole.
                for row in range(self._slabs[owner].start, self._slabs[owner].stop):
                    view = self._sum[trailing([row, *rest])]
                    np.multiply(view, inner * reciprocal_rows[row], out=view)
                    counts[owner] += int(view.size - np.count_nonzero(np.isfinite(view)))

            run_parallel(normalise, range(len(self._slabs)))
            bad = sum(counts)
        if bad:
            raise StitchError(
                f"{self.block.describe()}: {bad} blended values are NaN or infinite (the model "
                f"predicted non-finite values)"
            )
        result = self._sum
        self._sum = None
        return result

    def _weight_sums(self) -> list[np.ndarray]:
        """Per axis, the window profiles summed over the region.

        The windows form a cartesian grid and the weights are a product of per-axis profiles,
        so the total weight at a voxel is the product of these per-axis sums.
        """
        profiles = importance_profiles(self._patch, self.mode, sigma_scale=self.sigma_scale)
        result = []
        for region, profile, p, starts in zip(
            self.block.region, profiles, self._patch, self._starts, strict=True
        ):
            sums = np.zeros(region.stop - region.start)
            for start in starts:
                lo, hi = max(int(start), region.start), min(int(start) + p, region.stop)
                sums[lo - region.start : hi - region.start] += profile[
                    lo - int(start) : hi - int(start)
                ]
            result.append(sums)
        return result

    def _missing_message(self) -> str:
        missing = np.flatnonzero(~self._added)
        covered = np.zeros(self.block.region_shape, bool)
        for position in np.flatnonzero(self._added):
            covered[self._overlap(self.block.windows[position])[1]] = True
        first = tuple(int(v) for v in self.block.windows[missing[0]])
        message = (
            f"{self.block.describe()}: {len(missing)} of its {len(self._added)} windows were "
            f"not added (first missing start {first})"
        )
        if covered.all():
            return message + "; the blend would differ from a pass over every window"
        holes = np.nonzero(~covered)
        where = ", ".join(
            f"{r.start + int(h.min())}:{r.start + int(h.max()) + 1}"
            for r, h in zip(self.block.region, holes, strict=True)
        )
        return (
            f"{message}; {int((~covered).sum())} voxels in the region ({where}) received no "
            f"prediction"
        )


_POOL: tuple[int, Any] | None = None


def run_parallel(function: Callable[[int], object], items: range) -> None:
    """Run ``function(i)`` for every ``i`` on a process-local thread pool (made again after a
    fork), re-raising the first error."""
    if len(items) == 1:
        function(items[0])
        return
    import os
    from concurrent.futures import ThreadPoolExecutor

    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (
            os.getpid(),
            ThreadPoolExecutor(default_workers(), thread_name_prefix="voxflow-stitch"),
        )
    for future in [_POOL[1].submit(function, item) for item in items]:
        future.result()
