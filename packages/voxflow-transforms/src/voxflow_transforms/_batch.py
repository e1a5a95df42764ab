"""Validation of batches and arguments, and random-number helpers shared by every transform."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._errors import BatchError, TransformConfigError

Batch = dict[str, torch.Tensor]
"""A batch: key -> tensor shaped ``(B, C, *spatial)`` with the same ``B`` and ``spatial``."""


def check_probability(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise when it is not a probability in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise TransformConfigError(f"{name} must be a probability in [0, 1], found {value!r}")
    return float(value)


def check_flag(name: str, value: bool) -> bool:
    """Return ``value``, or raise when it is not a bool (``"no"`` would otherwise be true)."""
    if not isinstance(value, bool):
        raise TransformConfigError(f"{name} must be True or False, found {value!r}")
    return value


def check_seed(name: str, seed: int | None) -> int | None:
    """Return ``seed`` as an int (``None`` stays ``None``), or raise when it is not an integer in
    ``[0, 2**64)`` (a float seed would be truncated silently, a bool is not a seed)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TransformConfigError(
            f"{name} must be an integer in [0, 2**64) or None, found {seed!r} "
            f"({type(seed).__name__})"
        )
    if not 0 <= int(seed) < 2**64:
        raise TransformConfigError(f"{name} must lie in [0, 2**64), found {seed}")
    return int(seed)


def check_axes(name: str, axes: Sequence[int]) -> tuple[int, ...]:
    """Return spatial ``axes`` as a tuple of ints, or raise when one is not an integer."""
    found = tuple(axes)
    if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in found):
        raise TransformConfigError(f"{name} must be integer spatial axes, found {axes!r}")
    return tuple(int(a) for a in found)


def finite_values(name: str, values: Any) -> torch.Tensor:
    """Per-channel numbers (one number or one per channel) as a 1D float64 tensor; raise when
    they are not numbers or not finite."""
    try:
        flat = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TransformConfigError(
            f"{name} must be a number or one number per channel, found {values!r}"
        ) from exc
    if flat.numel() == 0 or not bool(torch.isfinite(flat).all()):
        raise TransformConfigError(
            f"{name} must be finite numbers (one, or one per channel), found {values!r}"
        )
    return flat


def check_range(
    name: str, value: Sequence[float] | float, *, low: float = -math.inf, high: float = math.inf
) -> tuple[float, float]:
    """Return ``(lo, hi)`` from a pair or a single number (a fixed value ``(v, v)``).

    Raises when ``lo > hi``, a bound is not finite, or a bound leaves ``[low, high]``.
    """
    pair = (value, value) if isinstance(value, int | float) else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pair
    ):
        raise TransformConfigError(
            f"{name} must be a number or a (low, high) pair, found {value!r}"
        )
    lo, hi = float(pair[0]), float(pair[1])
    if lo > hi:
        raise TransformConfigError(f"{name}: low {lo} is greater than high {hi}")
    if lo < low or hi > high:
        raise TransformConfigError(f"{name} must lie within [{low}, {high}], found ({lo}, {hi})")
    return lo, hi


def check_keys(name: str, keys: Sequence[str] | str) -> tuple[str, ...]:
    """Return ``keys`` as a non-empty tuple of distinct strings."""
    found = (keys,) if isinstance(keys, str) else tuple(keys)
    if not found or not all(isinstance(k, str) for k in found) or len(set(found)) != len(found):
        raise TransformConfigError(f"{name} must be distinct key strings, found {keys!r}")
    return found


def spatial_layout(
    batch: Mapping[str, Any], keys: Sequence[str], where: str
) -> tuple[int, tuple[int, ...]]:
    """Check that ``keys`` exist with one batch size and spatial shape; return ``(B, spatial)``.

    Shapes:
        every ``batch[key]``: ``(B, C, *spatial)`` with 2 or 3 spatial axes.
    """
    if not isinstance(batch, Mapping):
        raise BatchError(f"{where}: expected a dict of tensors, found {type(batch).__name__}")
    missing = [k for k in keys if k not in batch]
    if missing:
        raise BatchError(f"{where}: keys {missing} are missing; the batch has {sorted(batch)}")
    layout: tuple[int, tuple[int, ...]] | None = None
    first = ""
    for key in keys:
        value = batch[key]
        if not isinstance(value, torch.Tensor):
            raise BatchError(f"{where}: '{key}' must be a tensor, found {type(value).__name__}")
        if value.ndim not in (4, 5):
            raise BatchError(
                f"{where}: '{key}' must be shaped (B, C, *spatial) with 2 or 3 spatial axes, "
                f"found shape {tuple(value.shape)}"
            )
        found = (value.shape[0], tuple(value.shape[2:]))
        if layout is None:
            layout, first = found, key
        elif found != layout:
            raise BatchError(
                f"{where}: '{key}' has batch size {found[0]} and spatial shape {found[1]}, but "
                f"'{first}' has {layout[0]} and {layout[1]}"
            )
    if layout is None:
        raise BatchError(f"{where}: no keys to transform")
    return layout


def child_seed(generator: torch.Generator) -> int:
    """Draw a 62-bit seed from ``generator`` (CPU) for a derived generator."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def device_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: large random fields are drawn where the
    batch lives instead of on the CPU, and the same seed replays them on that device."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def uniform(
    bounds: tuple[float, float], shape: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    """Uniform float64 samples in ``[lo, hi]`` on the CPU, shaped ``shape``."""
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(tuple(shape), generator=generator, dtype=torch.float64)


def bernoulli(prob: float, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``(B,)`` bool: which samples a transform applied with probability ``prob`` acts on."""
    return torch.rand(batch_size, generator=generator, dtype=torch.float64) < prob


def unbatch(batch: Batch) -> Batch:
    """Remove the leading batch axis added to a single-sample dictionary."""
    return {k: v[0] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def check_finite_statistics(
    where: str,
    key: str,
    value: torch.Tensor,
    statistic: torch.Tensor,
    what: str,
    samples: torch.Tensor | None = None,
) -> None:
    """Raise when a per-(sample, channel) ``statistic`` of ``value`` is not finite: one NaN or
    infinite voxel would otherwise turn its whole channel into NaN (or a constant).

    Args:
        what: the statistic in words, for the message (``"mean and standard deviation"``).
        samples: the batch index of each row of ``value`` when it holds a subset of the batch.

    Shapes:
        value: ``(B, C, *spatial)``; statistic: ``(B, C, ...)``.
    """
    bad = ~torch.isfinite(statistic.reshape(*statistic.shape[:2], -1)).all(dim=2)
    if not bool(bad.any()):
        return
    row, channel = (int(i) for i in bad.nonzero()[0])
    count = int((~torch.isfinite(value[row, channel])).sum())
    sample = row if samples is None else int(samples[row])
    cause = (
        f"holds {count} non-finite voxel(s) (NaN or inf)"
        if count
        else f"has finite voxels, but its {what} overflow(s) {value.dtype}"
    )
    raise BatchError(
        f"{where}: '{key}' sample {sample}, channel {channel} {cause}; its per-sample {what} "
        f"would turn the whole channel into NaN ({int(bad.sum())} (sample, channel) pair(s) "
        "affected). Replace non-finite voxels before this transform"
    )
