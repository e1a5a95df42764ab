"""The Accumulator against a brute-force weighted average, and every way it refuses to guess."""

from __future__ import annotations

import numpy as np
import pytest

from voxflow_slicing import (
    Accumulator,
    Block,
    BlockPlan,
    GridError,
    StitchError,
    block_plan,
    importance_map,
)

torch = pytest.importorskip("torch")

PLAN = block_plan((20, 24, 18), (8, 8, 6), (8, 16, 12), overlap=0.5)


def window_predictions(block: Block, channels: int = 2) -> np.ndarray:
    """``(K, C, *patch)`` float32: one arbitrary prediction per window of the block."""
    rng = np.random.default_rng(block.number)
    return rng.random((len(block.windows), channels, *block.patch)).astype(np.float32)


def brute_force(block: Block, predictions: np.ndarray, mode: str) -> np.ndarray:
    """Full weight and sum maps over the whole volume, then the block's region."""
    weights = importance_map(block.patch, mode)
    total = np.zeros((predictions.shape[1], *block.shape))
    weight = np.zeros(block.shape)
    for start, prediction in zip(block.windows, predictions, strict=True):
        box = tuple(slice(s, s + p) for s, p in zip(start, block.patch, strict=True))
        total[(slice(None), *box)] += prediction * weights
        weight[box] += weights
    return (total / np.where(weight > 0, weight, np.nan))[(slice(None), *block.region)]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("mode", ["gaussian", "hann", "constant"])
def test_equals_brute_force_in_any_order_and_batching(kind: str, mode: str) -> None:
    rng = np.random.default_rng(7)
    for block in [PLAN[0], PLAN[len(PLAN) - 1], PLAN[3]]:
        predictions = window_predictions(block)
        accumulator = Accumulator(block, mode=mode)  # type: ignore[arg-type]
        order = rng.permutation(len(block.windows))
        for batch in np.array_split(order, 3):
            data = predictions[batch]
            accumulator.add(
                torch.from_numpy(data) if kind == "torch" else data, block.windows[batch]
            )
        result = accumulator.result()
        if kind == "torch":
            assert isinstance(result, torch.Tensor)
            assert result.dtype == torch.float32
            result = result.numpy()
        assert result.shape == (2, *block.region_shape)
        np.testing.assert_allclose(result, brute_force(block, predictions, mode), rtol=1e-5)


def test_half_precision_predictions_are_blended_in_float32() -> None:
    block = PLAN[1]
    predictions = window_predictions(block)
    accumulator = Accumulator(block)
    accumulator.add(torch.from_numpy(predictions).to(torch.bfloat16), block.windows)
    expected = brute_force(
        block, torch.from_numpy(predictions).bfloat16().float().numpy(), "gaussian"
    )
    np.testing.assert_allclose(accumulator.result().numpy(), expected, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_blends_on_the_gpu() -> None:
    block = PLAN[2]
    predictions = window_predictions(block)
    accumulator = Accumulator(block)
    accumulator.add(torch.from_numpy(predictions).cuda(), block.windows)
    result = accumulator.result()
    assert result.device.type == "cuda"
    np.testing.assert_allclose(
        result.cpu().numpy(), brute_force(block, predictions, "gaussian"), rtol=1e-5
    )


def test_uncovered_voxels_are_refused_with_their_region() -> None:
    block = block_plan((16, 16), (8, 8), (16, 16), overlap=0.0)[0]  # 4 windows, no overlap
    accumulator = Accumulator(block)
    predictions = window_predictions(block)
    accumulator.add(predictions[:3], block.windows[:3])
    assert not accumulator.complete
    with pytest.raises(
        StitchError,
        match=r"block 0 \(0:16, 0:16\): 1 of its 4 windows were not added \(first missing start "
        r"\(8, 8\)\); 64 voxels in the region \(8:16, 8:16\) received no prediction",
    ):
        accumulator.result()


def test_a_missing_window_under_covered_voxels_is_still_refused() -> None:
    block = block_plan((16,), (8,), (16,), overlap=0.5)[0]  # starts 0, 4, 8
    accumulator = Accumulator(block)
    predictions = window_predictions(block)
    accumulator.add(predictions[[0, 2]], block.windows[[0, 2]])
    with pytest.raises(StitchError, match="would differ from a pass over every window"):
        accumulator.result()


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            lambda b: (np.zeros((2, 1, 8, 8, 5), np.float32), b.windows[:2]),
            None,
            r"predictions of shape \(2, 1, 8, 8, 5\) for 2 window start\(s\); expected "
            r"\(2, \*out, 8, 8, 6\)",
        ),
        (
            lambda b: (np.zeros((3, 1, 8, 8, 6), np.float32), b.windows[:2]),
            None,
            r"predictions of shape \(3, 1, 8, 8, 6\) for 2 window start",
        ),
        (
            lambda b: (np.zeros((1, 8, 8, 6), np.float32), b.windows[:1] + 1),
            None,
            r"window start \(1, 1, 1\) is not one of the block's windows",
        ),
        (
            lambda b: (np.zeros((1, 8, 8, 6), np.float32), b.windows[:1].astype(float)),
            None,
            r"starts must be a \(B, 3\) integer array, found shape \(1, 3\) of float64",
        ),
        (
            lambda b: (np.zeros((2, 8, 8, 6), np.float32), b.windows[[0, 0]]),
            None,
            r"window \(0, 0, 0\) added twice",
        ),
        (
            lambda b: (np.zeros((1, 8, 8, 6), np.float32), b.windows[:1]),
            lambda b: (np.zeros((1, 8, 8, 6), np.float32), b.windows[:1]),
            r"window \(0, 0, 0\) added twice",
        ),
        (
            lambda b: (np.zeros((1, 2, 8, 8, 6), np.float32), b.windows[:1]),
            lambda b: (np.zeros((1, 3, 8, 8, 6), np.float32), b.windows[1:2]),
            r"predictions with output axes \(3,\) after earlier batches with \(2,\)",
        ),
        (
            lambda b: (np.zeros((1, 8, 8, 6), np.float32), b.windows[:1]),
            lambda b: (torch.zeros((1, 8, 8, 6)), b.windows[1:2]),
            "predictions on torch cpu after earlier batches on numpy",
        ),
        (
            lambda b: (np.zeros((1, 8, 8, 6), np.complex64), b.windows[:1]),
            None,
            "predictions of dtype complex64 are not real numbers",
        ),
        (
            lambda b: ([[0.0]], b.windows[:1]),
            None,
            "predictions must be a numpy array or a torch tensor, found list",
        ),
    ],
)
def test_bad_batches_are_refused(first, second, message: str) -> None:
    block = PLAN[0]
    accumulator = Accumulator(block)
    if second is not None:
        accumulator.add(*first(block))
        first = second
    with pytest.raises(StitchError, match=message):
        accumulator.add(*first(block))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_non_finite_predictions_are_refused(kind: str) -> None:
    block = PLAN[0]
    predictions = window_predictions(block)
    predictions[3, 0, 2, 2, 2] = np.nan
    accumulator = Accumulator(block)
    accumulator.add(
        torch.from_numpy(predictions) if kind == "torch" else predictions, block.windows
    )
    with pytest.raises(StitchError, match=r"block 0 .*: \d+ blended values are NaN or infinite"):
        accumulator.result()


def test_nothing_added_and_bad_arguments() -> None:
    with pytest.raises(StitchError, match=r"block 0 .*: no predictions were added"):
        Accumulator(PLAN[0]).result()
    with pytest.raises(StitchError, match="block must be a Block of a BlockPlan"):
        Accumulator((slice(0, 8),))  # type: ignore[arg-type]
    with pytest.raises(StitchError, match="sigma_scale must be positive, found -1"):
        Accumulator(PLAN[0], sigma_scale=-1)


def test_hand_made_blocks_are_checked() -> None:
    good = PLAN[0]
    with pytest.raises(StitchError, match=r"leave voxels of its region .* uncovered along axis 2"):
        Block(
            0,
            (0, 0, 0),
            good.region,
            good.input_region,
            good.windows[good.windows[:, 2] == 0],
            good.patch,
            good.shape,
        )
    with pytest.raises(StitchError, match="windows must be the cartesian product"):
        Block(
            0, (0, 0, 0), good.region, good.input_region, good.windows[:-1], good.patch, good.shape
        )
    with pytest.raises(
        StitchError, match=r"region .* must lie inside the spatial shape \(20, 24, 18\)"
    ):
        Block(
            0,
            (0, 0, 0),
            (slice(0, 30),) * 3,
            good.input_region,
            good.windows,
            good.patch,
            good.shape,
        )


def _morton_key(index: tuple[int, ...], bits: int) -> int:
    key = 0
    for bit in range(bits):
        for axis, value in enumerate(index):
            key |= ((value >> bit) & 1) << (bit * len(index) + len(index) - 1 - axis)
    return key


def test_plan_geometry_against_brute_force() -> None:
    plan = block_plan((37, 50, 21), (8, 16, 6), (16, 16, 8), overlap=0.5, order="morton")
    assert plan.grid == (3, 4, 3)
    assert plan.overlap == (0.5, 0.5, 0.5)
    blocks = list(plan)
    # Every window of the global grid that touches a block is listed, no other.
    from voxflow_slicing import grid_positions

    every = grid_positions(plan.shape, plan.patch, overlap=0.5)
    for block in blocks:
        touches = np.all(
            [
                (every[:, a] < block.region[a].stop)
                & (every[:, a] + plan.patch[a] > block.region[a].start)
                for a in range(3)
            ],
            axis=0,
        )
        assert sorted(map(tuple, every[touches])) == sorted(map(tuple, block.windows))
    halo = [
        max(
            max(
                b.region[a].start - b.input_region[a].start,
                b.input_region[a].stop - b.region[a].stop,
            )
            for b in blocks
        )
        for a in range(3)
    ]
    assert plan.halo == tuple(halo)
    indices = [b.index for b in blocks]
    assert indices == sorted(indices, key=lambda i: _morton_key(i, 2))
    assert sorted(b.number for b in blocks) == list(range(len(plan)))
    regions = np.zeros(plan.shape, int)
    for block in blocks:
        regions[block.region] += 1
    assert np.all(regions == 1)  # the blocks tile the volume


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (((16, 16), (8, 8), (8, 8), (8, 8), "hilbert"), "order must be one of 'c', 'morton'"),
        (((16, 16), (8, 8), (9, 8), (8, 8)), r"stride \(9, 8\) is larger than patch \(8, 8\)"),
        (((16, 16), (32, 8), (8, 8), (8, 8)), r"patch \(32, 8\) is larger than the volume"),
        (((16, 16), (8, 8), (8,), (8, 8)), r"stride \(8,\) must have 2 entries"),
    ],
)
def test_plan_is_validated_at_construction(arguments: tuple, message: str) -> None:
    with pytest.raises(GridError, match=message):
        BlockPlan(*arguments)
