"""Intensity normalisation of image windows, from statistics fixed once by ``init``.

The same :class:`Normalizer` runs in training (loader workers) and in ``predict``: its
statistics come from the config that travels inside every checkpoint, so a model never sees
intensities normalised differently from how it was trained.
"""

from __future__ import annotations

import logging

import numpy as np

from .config import NormalizationConfig
from .errors import DataError
from .volumes import ChannelFirst, sample_intensities

logger = logging.getLogger(__name__)


class Normalizer:
    """Maps raw ``(C, *spatial)`` windows to float32 with the configured scheme.

    Args:
        config: The ``normalization`` section.
        channels: Image channels.
        volume_stats: ``(C, 2)`` per-channel (mean, std) of this volume (scheme ``zscore``).

    Shapes:
        ``__call__``: ``(C, *spatial)`` any real dtype -> ``(C, *spatial)`` float32.
    """

    def __init__(
        self,
        config: NormalizationConfig,
        channels: int,
        volume_stats: np.ndarray | None = None,
    ) -> None:
        self.scheme = config.scheme
        self.low = self.high = None
        if config.clip_low is not None and config.clip_high is not None:
            self.low = _per_channel(config.clip_low, channels, "clip_low")
            self.high = _per_channel(config.clip_high, channels, "clip_high")
        if config.scheme in ("ct", "fixed"):
            if config.mean is None or config.std is None:
                raise DataError(f"normalization {config.scheme!r} needs mean and std")
            self.mean = _per_channel(config.mean, channels, "mean")
            self.std = _per_channel(config.std, channels, "std")
        elif config.scheme == "zscore":
            if volume_stats is None or volume_stats.shape != (channels, 2):
                raise DataError(
                    f"normalization 'zscore' needs (mean, std) for each of {channels} channels, "
                    f"found {None if volume_stats is None else volume_stats.tolist()}"
                )
            self.mean = volume_stats[:, 0].astype(np.float32).reshape(-1)
            self.std = volume_stats[:, 1].astype(np.float32).reshape(-1)
        else:
            self.mean = np.zeros(channels, np.float32)
            self.std = np.ones(channels, np.float32)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (window.ndim - 1)
        out = np.empty(window.shape, np.float32)
        if self.low is not None and self.high is not None:
            np.copyto(out, window, casting="unsafe")
            np.clip(out, self.low.reshape(shape), self.high.reshape(shape), out=out)
            out -= self.mean.reshape(shape)
        else:  # conversion and centring in one pass over the window
            np.subtract(window, self.mean.reshape(shape), out=out, casting="unsafe")
        out /= self.std.reshape(shape)
        return out

    def describe(self) -> str:
        mean = ", ".join(f"{m:.4g}" for m in self.mean)
        std = ", ".join(f"{s:.4g}" for s in self.std)
        clip = (
            ""
            if self.low is None or self.high is None
            else f", clip [{', '.join(f'{v:.4g}' for v in self.low)}] .. "
            f"[{', '.join(f'{v:.4g}' for v in self.high)}]"
        )
        return f"{self.scheme}: mean [{mean}], std [{std}]{clip}"


def _per_channel(values: list[float], channels: int, name: str) -> np.ndarray:
    if len(values) != channels:
        raise DataError(
            f"normalization.{name} has {len(values)} entries, the image has {channels} channels"
        )
    return np.asarray(values, np.float32)


def volume_statistics(image: ChannelFirst, sample_voxels: int, seed: int) -> np.ndarray:
    """Per-channel (mean, std) of a voxel sample of ``image``.

    Returns:
        ``(C, 2)`` float64.

    Raises:
        DataError: a constant channel (std 0) or non-finite voxels in the sample.
    """
    sample = sample_intensities(image, sample_voxels, seed)
    mean = sample.mean(axis=1)
    std = sample.std(axis=1)
    flat = [int(c) for c in np.flatnonzero(~(std > 0))]
    if flat:
        raise DataError(
            f"{image.path}: channel(s) {flat} are constant ({mean[flat].tolist()}) in a sample "
            f"of {sample.shape[1]} voxels; z-score normalisation needs varying intensities"
        )
    return np.stack([mean, std], axis=1)


def build_normalizer(
    config: NormalizationConfig, image: ChannelFirst, volume_id: str | None, seed: int
) -> Normalizer:
    """The normaliser of one image: per-volume statistics from the config when ``init``
    measured this volume, else measured now with the same sampling (``zscore``)."""
    stats = None
    if config.scheme == "zscore":
        if volume_id is not None and volume_id in config.per_volume:
            stats = np.asarray(config.per_volume[volume_id], np.float64)
        else:
            stats = volume_statistics(image, config.sample_voxels, seed)
            logger.info(
                "%s: measured z-score statistics %s from %d sampled voxels",
                image.path,
                stats.round(4).tolist(),
                config.sample_voxels,
            )
    return Normalizer(config, image.channels, stats)
