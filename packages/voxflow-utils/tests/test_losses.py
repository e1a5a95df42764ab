"""Losses against independent float64 references written out loop by loop."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss

from voxflow_utils import DeepSupervisionLoss, NTXentHCLLoss, NTXentLoss, deep_supervision_weights


def reference_hcl(
    first: torch.Tensor, second: torch.Tensor, temperature: float, beta: float
) -> float:
    """Robinson et al.'s hard-negative NT-Xent, one anchor at a time, in float64."""
    z = torch.cat([first, second]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = len(z)
    total = 0.0
    for i in range(n):
        p = (i + n // 2) % n
        sims = [float(z[i] @ z[j]) for j in range(n)]
        negatives = [j for j in range(n) if j not in (i, p)]
        weights = [math.exp(beta * sims[j]) for j in negatives]
        mean = sum(weights) / len(weights)
        denominator = math.exp(sims[p] / temperature) + sum(
            w / mean * math.exp(sims[j] / temperature)
            for w, j in zip(weights, negatives, strict=True)
        )
        total += -math.log(math.exp(sims[p] / temperature) / denominator)
    return total / n


def simclr_cross_entropy(
    first: torch.Tensor, second: torch.Tensor, temperature: float
) -> torch.Tensor:
    """NT-Xent the way SimCLR implementations write it: cross-entropy over masked similarities."""
    z = torch.nn.functional.normalize(torch.cat([first, second]).double(), dim=1)
    n = len(z)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = (torch.arange(n) + n // 2) % n
    return torch.nn.functional.cross_entropy(logits, targets)


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
def test_hcl_matches_the_reference(beta: float) -> None:
    torch.manual_seed(0)
    first, second = torch.randn(6, 8), torch.randn(6, 8)
    value = NTXentHCLLoss(temperature=0.2, beta=beta)(first.double(), second.double())
    assert value.item() == pytest.approx(reference_hcl(first, second, 0.2, beta), rel=1e-10)


def test_beta_zero_is_nt_xent_exactly() -> None:
    torch.manual_seed(1)
    first, second = (
        torch.randn(16, 32, dtype=torch.float64),
        torch.randn(16, 32, dtype=torch.float64),
    )
    plain = NTXentLoss(0.1)(first, second)
    assert torch.equal(NTXentHCLLoss(0.1, beta=0.0)(first, second), plain)
    torch.testing.assert_close(
        plain, simclr_cross_entropy(first, second, 0.1), rtol=1e-12, atol=1e-12
    )


def test_hard_negatives_raise_the_loss() -> None:
    torch.manual_seed(2)
    first = torch.randn(32, 16)
    second = first + 0.1 * torch.randn(32, 16)
    assert NTXentHCLLoss(0.5, beta=3.0)(first, second) > NTXentLoss(0.5)(first, second)


def test_deep_supervision_weights() -> None:
    torch.testing.assert_close(deep_supervision_weights(3), torch.tensor([4 / 7, 2 / 7, 1 / 7]))
    torch.testing.assert_close(
        deep_supervision_weights(3, include_lowest=False), torch.tensor([2 / 3, 1 / 3, 0.0])
    )


def test_deep_supervision_loss_is_the_weighted_sum_over_scales() -> None:
    torch.manual_seed(3)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    target = torch.randint(0, 3, (2, 1, 16, 16, 16))
    predictions = [
        torch.randn(2, 3, 16, 16, 16),
        torch.randn(2, 3, 8, 8, 8),
        torch.randn(2, 3, 4, 4, 4),
    ]
    value = DeepSupervisionLoss(dice_ce, 3)(predictions, target)
    expected = (
        4 / 7 * dice_ce(predictions[0], target)
        + 2 / 7 * dice_ce(predictions[1], target[:, :, ::2, ::2, ::2])
        + 1 / 7 * dice_ce(predictions[2], target[:, :, ::4, ::4, ::4])
    )
    torch.testing.assert_close(value, expected)


def test_half_precision_projections_are_compared_in_float32() -> None:
    torch.manual_seed(4)
    first, second = torch.randn(8, 16), torch.randn(8, 16)
    reference = NTXentHCLLoss(0.1, beta=2.0)(first, second)
    value = NTXentHCLLoss(0.1, beta=2.0)(first.bfloat16(), second.bfloat16())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=2e-2, atol=2e-2)
