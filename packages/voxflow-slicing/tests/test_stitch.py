"""Stitching equals a brute-force weighted average; blockwise equals single-pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxflow_slicing import (
    SlicingError,
    StitchError,
    block_plan,
    grid_positions,
    importance_map,
    sliding_window_predict,
)


def position_dependent(batch: np.ndarray) -> np.ndarray:
    """A 'model' whose output depends on where a voxel sits in the window, so that stitching
    weights and offsets matter: out = [x + ramp, 2x] per input channel 0."""
    ramp = np.indices(batch.shape[2:]).sum(axis=0).astype(np.float64)
    x = batch[:, 0].astype(np.float64)
    return np.stack([x + ramp, 2 * x], axis=1)


def brute_force(
    volume: np.ndarray, patch: tuple, overlap: float, weights: np.ndarray
) -> np.ndarray:
    spatial = volume.shape[1:]
    total = np.zeros((2, *spatial))
    weight_sum = np.zeros(spatial)
    for start in grid_positions(spatial, patch, overlap=overlap):
        box = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
        prediction = position_dependent(volume[(slice(None), *box)][None])[0]
        total[(slice(None), *box)] += prediction * weights
        weight_sum[box] += weights
    return total / weight_sum


def test_gaussian_and_hann_follow_their_formulas() -> None:
    weights = importance_map((8, 5), "gaussian")
    i, j = np.meshgrid(np.arange(8), np.arange(5), indexing="ij")
    expected = np.exp(-((i - 3.5) ** 2) / (2 * 1.0**2)) * np.exp(-((j - 2) ** 2) / (2 * 0.625**2))
    np.testing.assert_allclose(weights, expected / expected.max())
    hann = importance_map((6,), "hann")
    assert hann.min() > 0
    profile = np.sin(np.pi * (np.arange(6) + 0.5) / 6) ** 2
    np.testing.assert_allclose(hann, profile / profile.max())
    np.testing.assert_array_equal(importance_map((3, 3), "constant"), np.ones((3, 3)))


@pytest.mark.parametrize("mode", ["constant", "gaussian", "hann"])
def test_single_pass_equals_brute_force(mode: str) -> None:
    volume = np.random.default_rng(0).random((1, 19, 23, 17)).astype(np.float32)
    patch = (8, 10, 6)
    result = sliding_window_predict(
        volume, position_dependent, patch, overlap=0.5, mode=mode, batch_size=3
    )
    expected = brute_force(volume, patch, 0.5, importance_map(patch, mode))
    assert result.shape == (2, 19, 23, 17)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_blockwise_equals_single_pass(data: st.DataObject) -> None:
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(1, 20)) for _ in range(ndim))
    patch = tuple(data.draw(st.integers(1, n)) for n in shape)
    overlap = data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.75]))
    blocks = tuple(data.draw(st.integers(1, n)) for n in shape)
    mode = data.draw(st.sampled_from(["constant", "gaussian"]))
    volume = np.random.default_rng(1).random((1, *shape))
    whole = sliding_window_predict(volume, position_dependent, patch, overlap=overlap, mode=mode)
    blockwise = sliding_window_predict(
        volume, position_dependent, patch, overlap=overlap, mode=mode, block_shape=blocks
    )
    np.testing.assert_allclose(blockwise, whole, rtol=1e-6, atol=1e-6)


def test_zarr_output_chunks_written_once_and_ranks_split_blocks(tmp_path) -> None:
    zarr = pytest.importorskip("zarr")
    volume = np.random.default_rng(2).random((1, 24, 32, 16)).astype(np.float32)
    output = zarr.create_array(
        str(tmp_path / "o.zarr"), shape=(2, 24, 32, 16), chunks=(2, 8, 16, 16), dtype="float16"
    )
    writes: list = []
    original = type(output).__setitem__

    def counting(self, key, value):
        writes.append(key)
        return original(self, key, value)

    type(output).__setitem__ = counting
    try:
        plan = block_plan((24, 32, 16), (8, 8, 8), (8, 16, 16), overlap=0.5)
        for rank in range(2):  # two "ranks" write disjoint blocks of one store
            sliding_window_predict(
                volume,
                position_dependent,
                (8, 8, 8),
                output=output,
                blocks=[plan.block(n) for n in plan.shard(num_replicas=2, rank=rank)],
            )
    finally:
        type(output).__setitem__ = original
    assert len(writes) == len(plan) == 3 * 2 * 1
    assert len({str(k) for k in writes}) == len(writes)
    expected = sliding_window_predict(volume, position_dependent, (8, 8, 8))
    np.testing.assert_allclose(output[:], expected, rtol=2e-3, atol=2e-2)  # float16 storage


def test_predictor_with_wrong_output_shape() -> None:
    with pytest.raises(SlicingError, match=r"predictions of shape \(8, 1, 4, 2\) for 8 window"):
        sliding_window_predict(np.zeros((1, 8, 8)), lambda b: b[..., :2], (4, 4))


class CountingModel:
    """``position_dependent`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return position_dependent(batch)


VOLUME = np.random.default_rng(3).random((1, 16, 12)).astype(np.float32)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            np.zeros((2, 16, 12), np.uint8),
            r"output dtype uint8 is not floating: blended predictions are weighted averages "
            r"\(a probability of 0\.7 would be stored as 0\)",
        ),
        (np.zeros((2, 16, 12), np.int32), "output dtype int32 is not floating"),
        (
            np.zeros((2, 20, 12), np.float32),
            r"output shape \(2, 20, 12\) must be \(\*out, 16, 12\): its last 2 axes must equal "
            r"the source's spatial shape \(16, 12\)",
        ),
        (np.zeros((2, 8, 12), np.float32), r"output shape \(2, 8, 12\) must be \(\*out, 16, 12\)"),
        (np.zeros((12,), np.float32), r"output must have at least 2 axes, found shape \(12,\)"),
        ([[0.0]], "output must be an array-like"),
    ],
)
def test_bad_outputs_are_refused_before_predicting(output: object, message: str) -> None:
    model = CountingModel()
    with pytest.raises(StitchError, match=message):
        sliding_window_predict(VOLUME, model, (8, 8), output=output)
    assert model.calls == 0


def test_output_axes_are_checked_at_the_first_prediction() -> None:
    model = CountingModel()
    with pytest.raises(
        StitchError,
        match=r"predict returned shape \(6, 2, 8, 8\), i\.e\. output axes \(2,\), but output "
        r"has shape \(3, 16, 12\): expected output axes \(3,\)",
    ):
        sliding_window_predict(VOLUME, model, (8, 8), output=np.zeros((3, 16, 12), np.float32))
    assert model.calls == 1
    output = np.full((2, 16, 12), np.nan, np.float32)
    sliding_window_predict(VOLUME, position_dependent, (8, 8), output=output)
    expected = sliding_window_predict(VOLUME, position_dependent, (8, 8))
    np.testing.assert_allclose(output, expected)  # every voxel written


def test_blocks_need_an_output_and_must_come_from_this_plan() -> None:
    model = CountingModel()
    plan = block_plan((16, 12), (8, 8), (8, 4), overlap=0.5)
    with pytest.raises(StitchError, match="blocks= needs output=: without an output array"):
        sliding_window_predict(VOLUME, model, (8, 8), blocks=[plan[0], plan[1]])
    output = np.zeros((2, 16, 12), np.float32)
    bigger = block_plan((32, 32), (8, 8), (8, 8), overlap=0.5)
    with pytest.raises(
        StitchError,
        match=r"blocks\[0\]: block 15 \(24:32, 24:32\) was cut for a volume of \(32, 32\) with "
        r"patch \(8, 8\), not \(16, 12\) with patch \(8, 8\)",
    ):
        sliding_window_predict(VOLUME, model, (8, 8), blocks=[bigger[-1]], output=output)
    with pytest.raises(StitchError, match=r"blocks\[0\]: .* with patch \(8, 8\), not .* \(4, 4\)"):
        sliding_window_predict(VOLUME, model, (4, 4), blocks=plan, output=output)
    with pytest.raises(StitchError, match=r"blocks\[0\] must be a Block of a BlockPlan"):
        sliding_window_predict(VOLUME, model, (8, 8), blocks=[(0, 8)], output=output)
    assert model.calls == 0
    for rank in range(3):  # more ranks than some rank has blocks: still the whole volume
        sliding_window_predict(
            VOLUME,
            model,
            (8, 8),
            output=output,
            blocks=[plan.block(n) for n in plan.shard(num_replicas=3, rank=rank)],
        )
    np.testing.assert_allclose(
        output, sliding_window_predict(VOLUME, position_dependent, (8, 8)), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sliding_window_predict(VOLUME, position_dependent, (8.5, 8)),
            r"patch_size\[0\] must be an integer, found 8\.5",
        ),
        (
            lambda: sliding_window_predict(VOLUME, position_dependent, (8, 8), batch_size=0),
            "batch_size must be >= 1, found 0",
        ),
        (
            lambda: sliding_window_predict(VOLUME, position_dependent, (8, 8), batch_size=2.5),
            r"batch_size must be an integer",
        ),
        (
            lambda: sliding_window_predict(VOLUME, "model", (8, 8)),
            "predict must be callable, found str",
        ),
        (
            lambda: sliding_window_predict(VOLUME[0, 0], position_dependent, (8, 8)),
            r"source must have at least 2 axes, found shape \(12,\)",
        ),
        (
            lambda: sliding_window_predict(VOLUME, position_dependent, (8, 8), mode="gauss"),
            "mode must be one of 'constant', 'gaussian', 'hann', found 'gauss'",
        ),
        (
            lambda: sliding_window_predict(
                VOLUME, position_dependent, (8, 8), sigma_scale=float("nan")
            ),
            "sigma_scale must be a finite number",
        ),
        (
            lambda: sliding_window_predict(
                VOLUME, position_dependent, (8, 8), overlap=float("inf")
            ),
            "overlap must be a finite number",
        ),
        (
            lambda: sliding_window_predict(
                VOLUME, position_dependent, (8, 8), block_shape=(4.5, 4)
            ),
            r"block_shape\[0\] must be an integer",
        ),
        (lambda: block_plan((16, 12), (8, 8), (8,)), r"block_shape \(8,\) must have 2 entries"),
        (
            lambda: block_plan((1, 16, 12), (8, 8), (8, 8)),
            r"shape \(1, 16, 12\) must have one axis per patch axis",
        ),
        (
            lambda: block_plan((16, 12), (8, 8), (4, 4)).shard(num_replicas=2, rank=2),
            r"rank 2 must lie in \[0, num_replicas=2\)",
        ),
        (
            lambda: block_plan((16, 12), (8, 8), (4, 4)).shard(num_replicas=2.5, rank=0),
            r"num_replicas must be an integer, found 2\.5",
        ),
        (
            lambda: block_plan((16, 12), (8, 8), (4, 4), order="z"),
            "order must be one of 'c', 'morton', found 'z'",
        ),
        (
            lambda: sliding_window_predict(
                VOLUME, position_dependent, (8, 8), argmax=True, threshold=0.5
            ),
            "either argmax=True or threshold",
        ),
        (lambda: importance_map((4, 4.5)), r"patch_size\[1\] must be an integer"),
    ],
)
def test_bad_stitching_parameters(call, message: str) -> None:
    with pytest.raises(SlicingError, match=message):
        call()


def test_shards_are_disjoint_contiguous_runs_of_the_order() -> None:
    plan = block_plan((16, 12), (8, 8), (4, 4), order="morton")
    with pytest.raises(TypeError, match="positional"):
        plan.shard(2, 0)  # type: ignore[misc]
    shares = [plan.shard(num_replicas=4, rank=r) for r in range(4)]
    assert [n for share in shares for n in share] == plan.numbers.tolist()
    assert sorted(plan.numbers.tolist()) == list(range(len(plan)))


def test_a_plan_over_a_terabyte_volume_is_geometry_only() -> None:
    plan = block_plan((8192, 8192, 8192), (128, 128, 128), (256, 256, 256), overlap=0.5)
    assert len(plan) == 32**3
    assert plan.window_count == 127**3
    assert plan.halo == (64, 64, 64)
    block = plan.block(len(plan) - 1)
    assert block.region == (slice(7936, 8192),) * 3
    assert block.input_region == (slice(7872, 8192),) * 3
    assert len(block.windows) == 4**3
