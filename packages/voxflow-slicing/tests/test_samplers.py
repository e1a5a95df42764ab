"""Samplers: one record type, seeded, sharded like PyTorch's DistributedSampler on every rank."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxflow_slicing import (
    ForegroundOversampler,
    PatchDraw,
    PatchIndex,
    SamplerError,
    UniformSampler,
    VolumeSource,
    WeightedSampler,
    build_patch_index,
    sample_locations,
)


@pytest.fixture
def index() -> PatchIndex:
    rng = np.random.default_rng(0)
    sources = [
        VolumeSource(name, (16, 32, 32), labels=(rng.random((16, 32, 32)) < 0.05).astype(np.uint8))
        for name in ("a", "b")
    ]
    sources.append(VolumeSource("unlabeled", (16, 32, 32), weight=0.25))
    return build_patch_index(sources, (8, 8, 8), stride=4)


def line_index(size: int) -> PatchIndex:
    """``size`` one-voxel windows along a line, in one volume."""
    return PatchIndex(
        volumes=("v",),
        shapes=((size,),),
        patch_size=(1,),
        volume_ids=np.zeros(size, np.int32),
        positions=np.arange(size, dtype=np.int64).reshape(-1, 1),
        foreground_fraction=np.full(size, np.nan, np.float32),
        weights=np.ones(size),
    )


def test_every_sampler_yields_patch_draws_from_the_index(index: PatchIndex) -> None:
    for sampler in (
        UniformSampler(index, seed=3),
        WeightedSampler(index, num_samples=50, seed=3),
    ):
        sampler.set_epoch(2)
        draws = list(sampler)
        positions = sampler.shard()
        assert positions.dtype == np.int64
        assert len(draws) == len(positions) == len(sampler)
        for draw, i in zip(draws, positions, strict=True):
            assert isinstance(draw, PatchDraw)
            assert draw.volume == index.volumes[index.volume_ids[i]]
            assert draw.start.dtype == np.int64
            np.testing.assert_array_equal(draw.start, index.positions[i])
            assert draw.foreground_centred is False
        draws[0].start[:] = -1  # a copy: the index is untouched
        assert index.positions.min() >= 0


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_uniform_sampler_shards_without_overlap_and_with_equal_lengths(
    index: PatchIndex, replicas: int
) -> None:
    shards = [UniformSampler(index, seed=7, num_replicas=replicas, rank=r) for r in range(replicas)]
    for shard in shards:
        shard.set_epoch(3)
    positions = [s.shard() for s in shards]
    assert len({len(p) for p in positions}) == 1
    assert len(positions[0]) == -(-len(index) // replicas)
    flat = np.concatenate(positions).tolist()
    assert set(flat) == set(range(len(index)))  # every window, once (+ padding repeats)
    assert len(flat) - len(set(flat)) == len(positions[0]) * replicas - len(index)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 30),
    replicas=st.integers(1, 40),
    num_samples=st.integers(1, 50),
    shuffle=st.booleans(),
)
def test_every_rank_yields_len_draws_even_with_more_ranks_than_items(
    size: int, replicas: int, num_samples: int, shuffle: bool
) -> None:
    index = line_index(size)
    uniform = [
        UniformSampler(index, seed=1, shuffle=shuffle, num_replicas=replicas, rank=r)
        for r in range(replicas)
    ]
    weighted = [
        WeightedSampler(index, num_samples=num_samples, seed=1, num_replicas=replicas, rank=r)
        for r in range(replicas)
    ]
    for samplers, total in ((uniform, size), (weighted, num_samples)):
        for sampler in samplers:
            draws = list(sampler)
            assert len(sampler) == len(draws) == len(sampler.shard()) == math.ceil(total / replicas)
    # Reference: torch's DistributedSampler pads the global order by repeating it from its
    # start, as often as needed, then deals it out round robin.
    order = uniform[0]._global_sequence().tolist()
    padded = (order * math.ceil(len(uniform[0]) * replicas / size))[: len(uniform[0]) * replicas]
    for rank, sampler in enumerate(uniform):
        assert sampler.shard().tolist() == padded[rank::replicas]
    counts = Counter(i for s in uniform for i in s.shard().tolist())
    assert set(counts) == set(range(size))  # every window on some rank
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("size", [1, 2, 3, 7, 10])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 8, 25])
def test_padding_equals_torch_distributed_sampler(size: int, replicas: int) -> None:
    data = pytest.importorskip("torch.utils.data")
    index = line_index(size)
    for rank in range(replicas):
        ours = UniformSampler(index, seed=0, shuffle=False, num_replicas=replicas, rank=rank)
        theirs = data.DistributedSampler(
            range(size), num_replicas=replicas, rank=rank, shuffle=False
        )
        assert len(ours) == len(theirs)
        assert ours.shard().tolist() == list(theirs)
        assert [int(d.start[0]) for d in ours] == list(theirs)


def test_more_ranks_than_windows_pads_every_rank() -> None:
    index = line_index(3)
    shards = [
        UniformSampler(index, seed=0, shuffle=False, num_replicas=8, rank=r) for r in range(8)
    ]
    assert [len(s) for s in shards] == [1] * 8
    assert [int(next(iter(s)).start[0]) for s in shards] == [0, 1, 2, 0, 1, 2, 0, 1]


def test_samplers_are_reproducible_per_seed_and_epoch(index: PatchIndex) -> None:
    a, b = UniformSampler(index, seed=1), UniformSampler(index, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(UniformSampler(index, seed=2)) != list(a)
    assert list(UniformSampler(index, seed=1.0)) == list(a)  # integral: the same seed


def test_weighted_sampler_matches_its_probabilities(index: PatchIndex) -> None:
    sampler = WeightedSampler(index, num_samples=200_000, seed=0, balance_volumes=True)
    volumes = Counter(index.volume_ids[sampler.shard()].tolist())
    weights = np.array([1.0, 1.0, 0.25])
    expected = weights / weights.sum()
    observed = np.array([volumes[v] for v in range(3)]) / 200_000
    np.testing.assert_allclose(observed, expected, atol=0.005)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda i: UniformSampler(i, seed=1.5), r"seed must be an integer, found 1\.5 \(float\)"),
        (lambda i: UniformSampler(i, seed=-1), "seed must be >= 0, found -1"),
        (lambda i: UniformSampler(i, seed="1"), r"seed must be an integer, found '1' \(str\)"),
        (lambda i: UniformSampler(i, seed=0, num_replicas=0), "num_replicas must be >= 1"),
        (
            lambda i: UniformSampler(i, seed=0, num_replicas=2, rank=2),
            r"rank 2 must lie in \[0, num_replicas=2\)",
        ),
        (
            lambda i: UniformSampler(i, seed=0, num_replicas=2.5),
            r"num_replicas must be an integer, found 2\.5",
        ),
        (lambda i: UniformSampler(i, seed=0, shuffle=1), "shuffle must be True or False"),
        (lambda i: UniformSampler(i.positions, seed=0), "index must be a PatchIndex"),
        (
            lambda i: WeightedSampler(i, num_samples=2.5, seed=0),
            r"num_samples must be an integer, found 2\.5",
        ),
        (lambda i: WeightedSampler(i, num_samples=0, seed=0), "num_samples must be >= 1"),
        (
            lambda i: WeightedSampler(i.subset(np.zeros(len(i), bool)), num_samples=1, seed=0),
            "weights of the 0 windows must not all be zero",
        ),
        (
            lambda i: UniformSampler(i.subset(np.zeros(len(i), bool)), seed=0),
            "the patch index is empty",
        ),
    ],
)
def test_bad_sampler_parameters(index: PatchIndex, make, message: str) -> None:
    with pytest.raises(SamplerError, match=message):
        make(index)


def test_set_epoch_refuses_non_integral_epochs(index: PatchIndex) -> None:
    sampler = UniformSampler(index, seed=0)
    with pytest.raises(SamplerError, match=r"epoch must be an integer, found 1\.5"):
        sampler.set_epoch(1.5)
    with pytest.raises(SamplerError, match="epoch must be >= 0, found -1"):
        sampler.set_epoch(-1)


def oversampler(index: PatchIndex, locations: dict, **changes: object) -> ForegroundOversampler:
    arguments: dict = {
        "batch_size": 6,
        "batches_per_epoch": 5,
        "foreground_fraction": 1 / 3,
        "seed": 4,
    }
    arguments.update(changes)
    return ForegroundOversampler(index, locations, **arguments)


def test_foreground_oversampler_centres_the_configured_share(index: PatchIndex) -> None:
    labels = np.zeros((16, 32, 32), np.uint8)
    labels[5, 6, 7] = 2
    locations = {"a": sample_locations(labels, [2], max_per_class=10, seed=0)}
    batches = oversampler(index, locations).batches()
    assert len(batches) == 5
    for batch in batches:
        centred = [d for d in batch if d.foreground_centred]
        assert len(centred) == 2
        for draw in centred:
            assert draw.volume == "a"
            np.testing.assert_array_equal(draw.start + 4, [5, 6, 7])  # the voxel is the centre
    for replicas in (2, 7):  # 7 ranks, 5 batches: every rank still yields len() draws
        ranks = [
            oversampler(index, locations, foreground_fraction=0.5, num_replicas=replicas, rank=r)
            for r in range(replicas)
        ]
        per_rank = math.ceil(5 / replicas)
        for sampler in ranks:
            assert len(sampler.batches()) == per_rank
            assert len(list(sampler)) == len(sampler) == per_rank * 6


@pytest.mark.parametrize(
    ("locations", "message"),
    [
        (
            {"a": {1: np.zeros((4, 2), np.int64)}},
            r"locations\['a'\]\[1\] \(volume 'a', class 1\): expected \(K, 3\) voxel "
            r"coordinates, found shape \(4, 2\)",
        ),
        (
            {"b": {2: np.zeros(3, np.int64)}},
            r"\(volume 'b', class 2\): expected \(K, 3\) voxel coordinates, found shape \(3,\)",
        ),
        (
            {"a": {1: np.array([[0, 0, 0], [16, 0, 0]])}},
            r"\(volume 'a', class 1\): 1 of 2 coordinates lie outside the volume shape "
            r"\(16, 32, 32\), e\.g\. \[16, 0, 0\]",
        ),
        (
            {"a": {1: np.array([[0, -1, 0]])}},
            r"lie outside the volume shape \(16, 32, 32\), e\.g\. \[0, -1, 0\]",
        ),
        (
            {"a": {1: np.array([[0.5, 1, 0]])}},
            r"\(volume 'a', class 1\) must hold integers, found the non-integral value 0\.5",
        ),
        ({"zzz": {}}, r"locations name volumes \['zzz'\] that are not in the index"),
        ({"a": [np.zeros((1, 3))]}, r"locations\['a'\] must map classes to \(K, D\) coordinates"),
        ({"a": {}}, "foreground_fraction > 0 but no volume has foreground locations"),
    ],
)
def test_bad_foreground_locations(index: PatchIndex, locations: dict, message: str) -> None:
    with pytest.raises(SamplerError, match=message):
        oversampler(index, locations)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 2.5}, r"batch_size must be an integer, found 2\.5"),
        ({"batches_per_epoch": 0}, "batches_per_epoch must be >= 1, found 0"),
        ({"foreground_fraction": float("nan")}, "foreground_fraction must be a finite number"),
        ({"foreground_fraction": 1.5}, r"foreground_fraction must lie in \[0, 1\], found 1\.5"),
        ({"seed": 0.5}, r"seed must be an integer, found 0\.5"),
    ],
)
def test_bad_oversampler_parameters(index: PatchIndex, changes: dict, message: str) -> None:
    locations = {"a": {1: np.zeros((1, 3), np.int64)}}
    with pytest.raises(SamplerError, match=message):
        oversampler(index, locations, **changes)


def test_sample_locations_bad_inputs(tmp_path: Path) -> None:
    labels = np.zeros((4, 4), np.uint8)
    with pytest.raises(SamplerError, match=r"max_per_class must be an integer, found 2\.5"):
        sample_locations(labels, [1], max_per_class=2.5, seed=0)
    with pytest.raises(SamplerError, match=r"classes\[0\] must be an integer, found 1\.5"):
        sample_locations(labels, [1.5], max_per_class=2, seed=0)
    with pytest.raises(SamplerError, match=r"seed must be an integer, found 0\.5"):
        sample_locations(labels, [1], max_per_class=2, seed=0.5)
    with pytest.raises(SamplerError, match="labels must be an array-like"):
        sample_locations([[0, 1]], [1], max_per_class=2, seed=0)  # type: ignore[arg-type]
