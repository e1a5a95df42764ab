"""Separable Gaussian smoothing with a different sigma for every sample.

MONAI's ``GaussianSmooth`` takes one sigma for the whole call; batched augmentation needs one
per sample, so the kernels are stacked and applied as a grouped convolution (one group per
sample and channel), one spatial axis at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernels(sigma: torch.Tensor, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1D Gaussian kernels, one per row of ``sigma``, each cut at scipy's radius
    ``int(truncate * sigma + 0.5)`` (so that results equal ``scipy.ndimage.gaussian_filter``).

    Shapes:
        sigma: ``(N,)`` float (voxels, >= 0; 0 gives the identity kernel).
        result: ``(N, 2R+1)`` float64 with ``R`` the largest radius.
    """
    sigma = sigma.to(torch.float64)[:, None]
    radii = (truncate * sigma + 0.5).floor()
    radius = int(radii.max()) if sigma.numel() else 0
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-12)) ** 2)
    weights = torch.where(offsets[None].abs() <= radii, weights, 0.0)
    identity = (offsets == 0).to(torch.float64).expand_as(weights)
    weights = torch.where(sigma > 0, weights, identity)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_smooth(
    value: torch.Tensor, sigma: torch.Tensor, truncate: float = 3.0
) -> torch.Tensor:
    """Smooth each sample of ``value`` with its own isotropic Gaussian, mirror borders.

    Borders reflect about the edge voxel (scipy's ``mode="mirror"``). Axes shorter than the
    kernel radius + 1 are padded by repeated reflection.

    Shapes:
        value: ``(B, C, *spatial)`` float; sigma: ``(B,)`` voxels; result like ``value``.
    """
    batch_size, channels, *spatial = value.shape
    kernels = gaussian_kernels(sigma, truncate).to(value.device, value.dtype)
    radius = (kernels.shape[1] - 1) // 2
    if radius == 0:
        return value.clone()
    weight = kernels.repeat_interleave(channels, dim=0)[:, None]
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(spatial) - 1]
    out = value.reshape(1, batch_size * channels, *spatial)
    for axis in range(len(spatial)):
        out = _mirror_pad(out, 2 + axis, radius)
        shape = [1] * len(spatial)
        shape[axis] = kernels.shape[1]
        out = conv(out, weight.reshape(batch_size * channels, 1, *shape), groups=out.shape[1])
    return out.reshape(value.shape)


def _mirror_pad(value: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    size = value.shape[dim]
    if size == 1:
        return torch.cat([value] * (2 * radius + 1), dim=dim)
    index = torch.arange(-radius, size + radius, device=value.device)
    period = 2 * (size - 1)
    index = index.remainder(period)
    index = torch.where(index > size - 1, period - index, index)
    return value.index_select(dim, index)
