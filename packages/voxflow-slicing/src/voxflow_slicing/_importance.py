"""Importance maps: per-voxel weights of a window's prediction, as separable profiles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ._checks import as_int_tuple, as_real, check_choice
from ._errors import GridError, StitchError

ImportanceMode = Literal["constant", "gaussian", "hann"]


def importance_profiles(
    patch_size: Sequence[int], mode: ImportanceMode = "gaussian", *, sigma_scale: float = 0.125
) -> list[np.ndarray]:
    """Per-axis 1D weight profiles of a window's importance map.

    Their outer product is [importance_map][voxflow_slicing.importance_map] (unscaled).

    Args:
        patch_size: Window size, one positive integer per spatial axis.
        mode: ``"constant"``, ``"gaussian"`` or ``"hann"``, as in
            [importance_map][voxflow_slicing.importance_map].
        sigma_scale: Gaussian sigma as a fraction of the patch size (``mode="gaussian"``).

    Returns:
        One ``(p,)`` float64 profile per axis, each with maximum 1.

    Raises:
        GridError: Non-integral or non-positive patch sizes.
        StitchError: Unknown mode, or a ``sigma_scale`` that is not a positive number.
    """
    size = as_int_tuple(patch_size, "patch_size", error=GridError, minimum=1)
    check_choice(mode, "mode", ("constant", "gaussian", "hann"), error=StitchError)
    scale = as_real(sigma_scale, "sigma_scale", error=StitchError)
    if mode == "gaussian" and scale <= 0:
        raise StitchError(f"sigma_scale must be positive, found {scale}")
    profiles = []
    for p in size:
        i = np.arange(p, dtype=np.float64)
        if mode == "constant":
            profile = np.ones(p)
        elif mode == "gaussian":
            sigma = scale * p
            profile = np.exp(-((i - (p - 1) / 2) ** 2) / (2 * sigma**2))
        else:
            profile = np.sin(np.pi * (i + 0.5) / p) ** 2
        profiles.append(profile / profile.max())
    return profiles


def importance_map(
    patch_size: Sequence[int], mode: ImportanceMode = "gaussian", *, sigma_scale: float = 0.125
) -> np.ndarray:
    """Per-voxel weight of a window's prediction, maximum 1, strictly positive.

    Each mode is a product of per-axis profiles (see
    [importance_profiles][voxflow_slicing.importance_profiles]), for an axis of length ``p``:

    - ``constant``: all ones (plain averaging, as MONAI's ``mode="constant"``).
    - ``gaussian``: ``exp(-(i - c)^2 / (2 sigma^2))`` with centre ``c = (p - 1) / 2`` and
      ``sigma = sigma_scale * p`` (nnU-Net's 1/8).
    - ``hann``: ``sin^2(pi (i + 0.5) / p)`` (never zero at the edges, so border voxels
      covered by a single window keep a weight).

    Args:
        patch_size: Window size, one positive integer per spatial axis.
        mode: ``"constant"``, ``"gaussian"`` or ``"hann"``.
        sigma_scale: Gaussian sigma as a fraction of the patch size (``mode="gaussian"``).

    Returns:
        ``(*patch_size)`` float64.
    """
    profiles = importance_profiles(patch_size, mode, sigma_scale=sigma_scale)
    weights = profiles[0]
    for profile in profiles[1:]:
        weights = np.multiply.outer(weights, profile)
    return weights


def check_profiles(profiles: object, patch: tuple[int, ...]) -> list[np.ndarray]:
    """Per-axis weight profiles as float64 arrays, one of length ``p`` per patch axis.

    Raises:
        StitchError: Wrong count or lengths, or weights that are not finite and positive.
    """
    if not isinstance(profiles, Sequence) or len(profiles) != len(patch):
        found = len(profiles) if isinstance(profiles, Sequence) else type(profiles).__name__
        raise StitchError(
            f"profiles must be one 1-D weight array per patch axis ({len(patch)}), found {found}"
        )
    checked = [np.asarray(p, np.float64) for p in profiles]
    if tuple(p.shape for p in checked) != tuple((n,) for n in patch):
        raise StitchError(
            f"importance profiles of shapes {[p.shape for p in checked]} differ from patch {patch}"
        )
    if not all(np.all(np.isfinite(p)) and p.min() > 0 for p in checked):
        raise StitchError("importance profiles must be finite and strictly positive")
    return checked
