"""Patch index (cache invalidated by label edits) and samplers (seeded, sharded)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from voxflow_slicing import (
    ForegroundOversampler,
    PatchIndex,
    ScreeningError,
    SlicingError,
    UniformSampler,
    VolumeSource,
    WeightedSampler,
    build_patch_index,
    fingerprint,
    sample_locations,
    screen_patches,
)


def make_sources(tmp_path: Path, *, write: bool = True) -> list[VolumeSource]:
    rng = np.random.default_rng(0)
    sources = []
    for name in ("a", "b"):
        labels = (rng.random((16, 32, 32)) < 0.05).astype(np.uint8)
        if write:
            np.save(tmp_path / f"{name}.npy", labels)
        mapped = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
        sources.append(
            VolumeSource(
                name, labels.shape, labels=mapped, fingerprint=fingerprint(tmp_path / f"{name}.npy")
            )
        )
    sources.append(VolumeSource("unlabeled", (16, 32, 32), weight=0.25))
    return sources


def test_index_gathers_kept_windows_of_every_volume(tmp_path: Path) -> None:
    sources = make_sources(tmp_path)
    index = build_patch_index(sources, (8, 8, 8), stride=4, min_foreground_fraction=0.06)
    for volume_id, source in enumerate(sources[:2]):
        screen = screen_patches(source.labels, (8, 8, 8), stride=4, min_foreground_fraction=0.06)
        mine = index.positions[index.volume_ids == volume_id]
        np.testing.assert_array_equal(mine, screen.kept_positions)
    unlabeled = index.volume_ids == 2
    assert unlabeled.sum() == 3 * 7 * 7
    assert np.isnan(index.foreground_fraction[unlabeled]).all()
    assert set(index.weights[unlabeled]) == {0.25}


def test_cache_reused_then_invalidated_by_a_label_edit(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sources = make_sources(tmp_path)
    first = build_patch_index(
        sources, (8, 8, 8), stride=4, min_foreground_fraction=0.06, cache_dir=cache
    )
    (written,) = cache.iterdir()
    stamp = written.stat().st_mtime_ns
    again = build_patch_index(
        sources, (8, 8, 8), stride=4, min_foreground_fraction=0.06, cache_dir=cache
    )
    assert written.stat().st_mtime_ns == stamp  # reused, not rewritten
    np.testing.assert_array_equal(again.positions, first.positions)
    # Edit the labels in place: same path, same size, same shape.
    labels = np.load(tmp_path / "a.npy")
    labels[:] = 1
    np.save(tmp_path / "a.npy", labels)
    edited = make_sources(tmp_path, write=False)
    rebuilt = build_patch_index(
        edited, (8, 8, 8), stride=4, min_foreground_fraction=0.06, cache_dir=cache
    )
    assert len(list(cache.iterdir())) == 2
    assert (rebuilt.volume_ids == 0).sum() == 3 * 7 * 7  # every window of 'a' is now foreground
    # A parameter change is a new key too.
    build_patch_index(edited, (8, 8, 8), stride=4, min_foreground_fraction=0.07, cache_dir=cache)
    assert len(list(cache.iterdir())) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_cache_needs_fingerprints(tmp_path: Path) -> None:
    source = VolumeSource("a", (8, 8), labels=np.zeros((8, 8), np.uint8))
    with pytest.raises(ScreeningError, match=r"missing for \['a'\]"):
        build_patch_index([source], (4, 4), cache_dir=tmp_path)


def test_index_round_trips_through_disk(tmp_path: Path) -> None:
    index = build_patch_index(make_sources(tmp_path), (8, 8, 8), stride=8)
    index.save(tmp_path / "i.npz")
    loaded = PatchIndex.load(tmp_path / "i.npz")
    assert loaded.volumes == index.volumes
    np.testing.assert_array_equal(loaded.positions, index.positions)
    np.testing.assert_array_equal(loaded.weights, index.weights)


@pytest.fixture
def index(tmp_path: Path) -> PatchIndex:
    return build_patch_index(make_sources(tmp_path), (8, 8, 8), stride=4)


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_uniform_sampler_shards_without_overlap_and_with_equal_lengths(
    index: PatchIndex, replicas: int
) -> None:
    shards = [UniformSampler(index, seed=7, num_replicas=replicas, rank=r) for r in range(replicas)]
    for shard in shards:
        shard.set_epoch(3)
    draws = [list(s) for s in shards]
    assert len({len(d) for d in draws}) == 1
    assert len(draws[0]) == -(-len(index) // replicas)
    flat = [i for d in draws for i in d]
    assert set(flat) == set(range(len(index)))  # every window, once (+ padding repeats)
    assert len(flat) - len(set(flat)) == len(draws[0]) * replicas - len(index)


def test_samplers_are_reproducible_per_seed_and_epoch(index: PatchIndex) -> None:
    a, b = UniformSampler(index, seed=1), UniformSampler(index, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(UniformSampler(index, seed=2)) != list(a)


def test_weighted_sampler_matches_its_probabilities(index: PatchIndex) -> None:
    sampler = WeightedSampler(index, num_samples=200_000, seed=0, balance_volumes=True)
    volumes = Counter(index.volume_ids[list(sampler)].tolist())
    weights = np.array([1.0, 1.0, 0.25])
    expected = weights / weights.sum()
    observed = np.array([volumes[v] for v in range(3)]) / 200_000
    np.testing.assert_allclose(observed, expected, atol=0.005)


def test_foreground_oversampler_centres_the_configured_share(index: PatchIndex) -> None:
    labels = np.zeros((16, 32, 32), np.uint8)
    labels[5, 6, 7] = 2
    locations = {"a": sample_locations(labels, [2], max_per_class=10, seed=0)}
    sampler = ForegroundOversampler(
        index, locations, batch_size=6, batches_per_epoch=5, foreground_fraction=1 / 3, seed=4
    )
    batches = sampler.batches()
    assert len(batches) == 5
    for batch in batches:
        centred = [d for d in batch if d.foreground_centred]
        assert len(centred) == 2
        for draw in centred:
            assert draw.volume == "a"
            np.testing.assert_array_equal(draw.start + 4, [5, 6, 7])  # the voxel is the centre
    ranks = [
        ForegroundOversampler(
            index,
            locations,
            batch_size=6,
            batches_per_epoch=5,
            foreground_fraction=0.5,
            seed=4,
            num_replicas=2,
            rank=r,
        )
        for r in (0, 1)
    ]
    assert len(ranks[0].batches()) == len(ranks[1].batches()) == 3
    with pytest.raises(SlicingError, match="not in the index"):
        ForegroundOversampler(
            index, {"zzz": {}}, batch_size=2, batches_per_epoch=1, foreground_fraction=0.5, seed=0
        )
