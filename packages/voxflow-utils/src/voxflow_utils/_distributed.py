"""Gather tensors from every DDP rank with gradients flowing back to each rank's own part."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class _GatherWithGradient(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient and keeps this rank's slice.

    Each rank computes its loss over the gathered batch, so the gradient of the total loss
    (the sum over ranks) with respect to this rank's rows is the sum of every rank's gradient
    for them: an all_reduce(SUM) of the incoming gradients. (``torch.distributed.all_gather``
    alone returns tensors without gradient.)
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = dist.get_rank()
        ctx.size = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank (rank order) along dim 0, differentiably.

    Every rank must pass the same shape. Without an initialised process group (one process),
    the tensor is returned as it is.

    Shapes:
        tensor: ``(B, *)`` -> ``(world_size * B, *)``.

    With each rank computing a loss over its own anchors against the gathered batch, the
    gradient each rank receives for its rows equals the gradient of the sum of all ranks'
    losses, i.e. what one process holding the whole batch would compute.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGradient.apply(tensor)
