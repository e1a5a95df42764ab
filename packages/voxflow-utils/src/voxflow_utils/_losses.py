"""Losses: deep-supervision weighting over MONAI losses, NT-Xent and its hard-negative variant."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from ._errors import LossInputError


def deep_supervision_weights(num_scales: int, *, include_lowest: bool = True) -> torch.Tensor:
    """nnU-Net's weights ``1 / 2**i`` for scales ``i = 0..n-1``, the lowest optionally 0, sum 1.

    Returns:
        ``(num_scales,)`` float32.
    """
    if (
        isinstance(num_scales, bool)
        or not isinstance(num_scales, numbers.Integral)
        or num_scales < 1
        or (num_scales == 1 and not include_lowest)
    ):
        raise LossInputError(
            f"num_scales must be an integer >= 1 (>= 2 without the lowest), found {num_scales!r}"
        )
    weights = torch.tensor([0.5**i for i in range(num_scales)], dtype=torch.float32)
    if not include_lowest:
        weights[-1] = 0.0
    return weights / weights.sum()


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss`` over the scales of a deep-supervised prediction.

    Targets are resized to each prediction's spatial size by nearest-neighbour interpolation
    (labels stay labels); predictions already at full size use the target as it is.

    Shapes:
        predictions: list of ``(B, C, *spatial_i)`` float, scale 0 first.
        target: ``(B, C_t, *spatial_0)`` (whatever ``loss`` takes).
    """

    def __init__(self, loss: nn.Module, num_scales: int, *, include_lowest: bool = True) -> None:
        super().__init__()
        self.loss = loss
        self.register_buffer(
            "weights", deep_supervision_weights(num_scales, include_lowest=include_lowest)
        )

    def forward(self, predictions: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        weights = self.get_buffer("weights")
        if len(predictions) != len(weights):
            raise LossInputError(
                f"{len(predictions)} predictions for {len(weights)} deep-supervision scales"
            )
        total = predictions[0].new_zeros(())
        for weight, prediction in zip(weights, predictions, strict=True):
            if weight == 0:
                continue
            scaled = target
            if prediction.shape[2:] != target.shape[2:]:
                scaled = functional.interpolate(
                    target.float(), size=prediction.shape[2:], mode="nearest"
                ).to(target.dtype)
            total = total + weight * self.loss(prediction, scaled)
        return total


def _finite(name: str, value: float, *, positive: bool) -> float:
    """``value`` as a float, or ``LossInputError`` when it is not a finite number (> 0 or >= 0)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (value <= 0 if positive else value < 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise LossInputError(f"{name} must be a finite number {bound}, found {value!r}")
    return float(value)


def _pair_similarities(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)):
        raise LossInputError(
            f"views must be tensors, found {type(first).__name__} and {type(second).__name__}"
        )
    if not (first.is_floating_point() and second.is_floating_point()):
        raise LossInputError(
            f"views must be floating tensors, found {first.dtype} and {second.dtype}"
        )
    if first.ndim != 2 or first.shape != second.shape or first.shape[0] < 2:
        raise LossInputError(
            f"views must both be (B, D) with B >= 2, found {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    embeddings = torch.cat([first, second])
    if embeddings.dtype in (torch.float16, torch.bfloat16):
        embeddings = embeddings.float()  # exp and log-sum-exp of similarities need float32 range
    embeddings = functional.normalize(embeddings, dim=1)
    return embeddings @ embeddings.T


class NTXentHCLLoss(nn.Module):
    """NT-Xent with hard-negative concentration (Robinson et al., ICLR 2021).

    For anchor ``i`` with positive ``p(i)`` (its other view) and cosine similarities ``s``:
    ``loss_i = -log(exp(s_ip/t) / (exp(s_ip/t) + sum_n w_in exp(s_in/t)))``, where the
    negatives' weights ``w_in = exp(beta s_in) / mean_n exp(beta s_in)`` have mean 1 over the
    anchor's negatives. ``beta = 0`` gives every weight 1: plain NT-Xent (SimCLR), exactly.
    The mean over the ``2B`` anchors is returned.

    Args:
        temperature: divides the similarities (finite, > 0).
        beta: concentration on hard negatives (finite, >= 0).

    Raises:
        LossInputError: at construction, a temperature or beta that is not finite or out of
            range; at a call, views that are not ``(B, D)`` float with ``B >= 2``.

    Shapes:
        first, second: ``(B, D)`` float, row ``k`` of both are views of the same sample.
    """

    def __init__(self, temperature: float = 0.1, beta: float = 0.0) -> None:
        super().__init__()
        self.temperature = _finite(
            f"{type(self).__name__}: temperature", temperature, positive=True
        )
        self.beta = _finite(f"{type(self).__name__}: beta", beta, positive=False)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        similarity = _pair_similarities(first, second)
        n = similarity.shape[0]
        batch = n // 2
        index = torch.arange(n, device=similarity.device)
        positive_index = (index + batch) % n
        positive = similarity[index, positive_index] / self.temperature
        negative_mask = torch.ones_like(similarity, dtype=torch.bool)
        negative_mask[index, index] = False
        negative_mask[index, positive_index] = False
        negatives = similarity[negative_mask].view(n, n - 2)
        logits = negatives / self.temperature
        if self.beta:
            log_weights = self.beta * negatives
            log_weights = (
                log_weights
                - torch.logsumexp(log_weights, dim=1, keepdim=True)
                + torch.log(
                    torch.tensor(float(n - 2), dtype=negatives.dtype, device=negatives.device)
                )
            )
            logits = logits + log_weights
        denominator = torch.logsumexp(torch.cat([positive[:, None], logits], dim=1), dim=1)
        return (denominator - positive).mean()


class NTXentLoss(NTXentHCLLoss):
    """NT-Xent (SimCLR): [NTXentHCLLoss][voxflow_utils.NTXentHCLLoss] with ``beta = 0``.

    Args:
        temperature: divides the similarities (finite, > 0).

    Shapes:
        first, second: ``(B, D)`` float.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__(temperature=temperature, beta=0.0)
