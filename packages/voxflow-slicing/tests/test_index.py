"""Patch index: kept windows of every volume, a cache invalidated by label edits and rebuilt
when damaged, stale temporaries removed, validation of hand-built and loaded indexes."""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from voxflow_slicing import (
    GridError,
    PatchIndex,
    PatchIndexError,
    ScreeningError,
    VolumeSource,
    build_patch_index,
    fingerprint,
    grid_positions,
    screen_patches,
)

PARAMETERS = {"stride": 4, "min_foreground_fraction": 0.06}


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
    index = build_patch_index(sources, (8, 8, 8), **PARAMETERS)
    for volume_id, source in enumerate(sources[:2]):
        screen = screen_patches(source.labels, (8, 8, 8), **PARAMETERS)
        mine = index.positions[index.volume_ids == volume_id]
        np.testing.assert_array_equal(mine, screen.kept_positions)
    unlabeled = index.volume_ids == 2
    np.testing.assert_array_equal(
        index.positions[unlabeled], grid_positions((16, 32, 32), (8, 8, 8), stride=4)
    )
    assert np.isnan(index.foreground_fraction[unlabeled]).all()
    assert set(index.weights[unlabeled]) == {0.25}
    assert index.shapes == ((16, 32, 32),) * 3


def test_cache_reused_then_invalidated_by_a_label_edit(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sources = make_sources(tmp_path)
    first = build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    (written,) = cache.iterdir()
    stamp = written.stat().st_mtime_ns
    again = build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    assert written.stat().st_mtime_ns == stamp  # reused, not rewritten
    np.testing.assert_array_equal(again.positions, first.positions)
    # Edit the labels in place: same path, same size, same shape.
    labels = np.load(tmp_path / "a.npy")
    labels[:] = 1
    np.save(tmp_path / "a.npy", labels)
    edited = make_sources(tmp_path, write=False)
    rebuilt = build_patch_index(edited, (8, 8, 8), **PARAMETERS, cache_dir=cache)
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
    assert loaded.shapes == index.shapes
    assert loaded.patch_size == index.patch_size
    for name in ("volume_ids", "positions", "foreground_fraction", "weights"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(index, name))
        assert getattr(loaded, name).dtype == getattr(index, name).dtype


# --- damaged caches -------------------------------------------------------------------------

Arrays = dict[str, np.ndarray]


def _move_outside(arrays: Arrays) -> None:
    arrays["positions"][0] = [100, 0, 0]


def _move_off_grid(arrays: Arrays) -> None:
    arrays["positions"][0] = [1, 1, 1]


def _repeat_window(arrays: Arrays) -> None:
    arrays["positions"][1] = arrays["positions"][0]


def _rename_volume(arrays: Arrays) -> None:
    arrays["volumes"] = np.array(["a", "zzz", "unlabeled"])


def _change_shape(arrays: Arrays) -> None:
    arrays["shapes"][0] = [17, 32, 32]


def _change_patch(arrays: Arrays) -> None:
    arrays["patch_size"] = np.array([8, 8, 4])


def _narrow_dtype(arrays: Arrays) -> None:
    arrays["positions"] = arrays["positions"].astype(np.int32)


def _drop_weights(arrays: Arrays) -> None:
    arrays["weights"] = arrays["weights"][:-1]


def _unknown_volume_id(arrays: Arrays) -> None:
    arrays["volume_ids"][0] = 7


def _change_weight(arrays: Arrays) -> None:
    arrays["weights"][0] = 5.0


def _drop_key(arrays: Arrays) -> None:
    del arrays["foreground_fraction"]


def _label_unlabeled(arrays: Arrays) -> None:
    arrays["foreground_fraction"][-1] = 0.5


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_move_outside, r"reach outside their volume, e\.g\. window 0 of volume 'a'"),
        (_move_off_grid, "volume 'a': windows off the grid over"),
        (_repeat_window, "volume 'a': windows repeated or out of order"),
        (_rename_volume, r"volumes \('a', 'zzz', 'unlabeled'\) differ from the sources"),
        (_change_shape, r"volume shapes .* differ from the sources"),
        (_change_patch, r"patch_size \(8, 8, 4\), expected \(8, 8, 8\)"),
        (
            _narrow_dtype,
            r"positions must be a \(\d+, 3\) int64 array, found shape \(\d+, 3\) int32",
        ),
        (_drop_weights, r"weights must have shape \(\d+,\), found \(\d+,\)"),
        (_unknown_volume_id, r"volume_ids must lie in \[0, 3\), found 0\.\.7"),
        (_change_weight, "volume 'a': weights differ from the source's 1.0"),
        (_drop_key, r"arrays \['foreground_fraction'\] are missing"),
        (_label_unlabeled, "volume 'unlabeled': unlabeled, but foreground fractions are set"),
    ],
)
def test_an_edited_cache_is_rebuilt_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Arrays], None],
    reason: str,
) -> None:
    cache = tmp_path / "cache"
    sources = make_sources(tmp_path)
    fresh = build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    (written,) = cache.iterdir()
    with np.load(written) as data:
        arrays = {key: data[key].copy() for key in data.files}
    damage(arrays)
    with open(written, "wb") as stream:
        np.savez(stream, **arrays)
    with caplog.at_level(logging.WARNING, logger="voxflow_slicing"):
        rebuilt = build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(f"rebuilding the damaged patch index cache {written}: ")
    assert re.search(reason, warning.getMessage()), warning.getMessage()
    np.testing.assert_array_equal(rebuilt.positions, fresh.positions)
    np.testing.assert_array_equal(PatchIndex.load(written).positions, fresh.positions)  # rewritten


@pytest.mark.parametrize("length", [0, 10, 200, -100, -1])
def test_a_truncated_cache_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, length: int
) -> None:
    cache = tmp_path / "cache"
    sources = make_sources(tmp_path)
    fresh = build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    (written,) = cache.iterdir()
    data = written.read_bytes()
    written.write_bytes(data[:length] if length >= 0 else data[: len(data) + length])
    with pytest.raises(PatchIndexError, match=rf"{written}: (not a readable|damaged) \.npz"):
        PatchIndex.load(written)
    with caplog.at_level(logging.WARNING, logger="voxflow_slicing"):
        rebuilt = build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    assert any(str(written) in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(rebuilt.positions, fresh.positions)
    np.testing.assert_array_equal(PatchIndex.load(written).weights, fresh.weights)


def test_a_single_npy_is_not_an_index(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(PatchIndexError, match=r"expected an \.npz archive, found a single \.npy"):
        PatchIndex.load(tmp_path / "x.npy")


def _cache_file(cache: Path) -> Path:
    (written,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return written


def test_stale_temporaries_of_a_killed_save_are_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    sources = make_sources(tmp_path)
    build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    written = _cache_file(cache)
    written.unlink()
    # What a save killed mid-write leaves: an unlocked, half-written temporary.
    stale = cache / f".{written.name}.k1ll3d.tmp"
    stale.write_bytes(b"PK\x03\x04 half an archive")
    other = cache / ".patch-index-0123.npz.k1ll3d.tmp"  # another cache file's: not ours to touch
    other.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="voxflow_slicing"):
        build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    assert not stale.exists()
    assert other.exists()
    assert any(str(stale) in r.getMessage() for r in caplog.records)
    assert written.is_file()


def test_a_temporary_being_written_by_another_process_is_left_alone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sources = make_sources(tmp_path)
    build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    written = _cache_file(cache)
    busy = cache / f".{written.name}.busy.tmp"
    busy.write_bytes(b"")
    handle = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a writer on another rank holds it
        build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
        assert busy.exists()
    finally:
        os.close(handle)
    build_patch_index(sources, (8, 8, 8), **PARAMETERS, cache_dir=cache)
    assert not busy.exists()  # its writer is gone: stale


# --- validation -----------------------------------------------------------------------------


def small_index(**changes: object) -> PatchIndex:
    fields: dict[str, object] = {
        "volumes": ("a",),
        "shapes": ((10, 10),),
        "patch_size": (4, 4),
        "volume_ids": np.zeros(2, np.int32),
        "positions": np.array([[0, 0], [6, 6]], np.int64),
        "foreground_fraction": np.array([0.5, np.nan], np.float32),
        "weights": np.ones(2),
    }
    fields.update(changes)
    return PatchIndex(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"positions": np.array([[0, 0], [7, 6]], np.int64)}, r"1 windows reach outside"),
        ({"positions": np.array([[0, 0], [-1, 6]], np.int64)}, r"starts at \[-1, 6\]"),
        ({"positions": np.zeros((2, 3), np.int64)}, r"must have shape \(2, 2\), found \(2, 3\)"),
        (
            {"volume_ids": np.zeros(2, np.int64)},
            r"volume_ids must be a \(N,\) int32 array, found shape \(2,\) int64",
        ),
        ({"weights": np.array([1.0, np.inf])}, "weights must be finite"),
        ({"foreground_fraction": np.array([2, 0], np.float32)}, r"must lie in \[0, 1\]"),
        ({"shapes": ((10,),)}, r"shapes\[0\] \(volume 'a'\) .* must have 2 entries"),
        ({"shapes": ()}, "shapes has 0 entries, expected one per volume"),
        ({"volumes": ("a", "a")}, "volumes must be unique"),
        ({"patch_size": (4.5, 4)}, r"patch_size\[0\] must be an integer, found 4.5"),
    ],
)
def test_an_inconsistent_index_is_refused(changes: dict, message: str) -> None:
    small_index()  # the unchanged one is fine
    with pytest.raises(PatchIndexError, match=message):
        small_index(**changes)


def test_subset_keeps_volumes_and_shapes() -> None:
    index = small_index()
    subset = index.subset(np.array([False, True]))
    assert subset.shapes == index.shapes
    np.testing.assert_array_equal(subset.positions, [[6, 6]])
    np.testing.assert_array_equal(index.subset(np.array([1, 0])).positions, [[6, 6], [0, 0]])
    with pytest.raises(PatchIndexError, match="bool mask of length 3, expected 2"):
        index.subset(np.ones(3, bool))
    with pytest.raises(PatchIndexError, match=r"positions must lie in \[0, 2\), found 0\.\.2"):
        index.subset(np.array([0, 2]))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: VolumeSource("", (8, 8)), "volume name must be a non-empty string"),
        (lambda: VolumeSource("a", (8, 8.5)), r"volume 'a': shape\[1\] must be an integer"),
        (lambda: VolumeSource("a", (8, 0)), r"volume 'a': shape\[1\] must be >= 1, found 0"),
        (lambda: VolumeSource("a", (8, 8), weight=-1), r"weight must lie in \[0, inf\]"),
        (lambda: VolumeSource("a", (8, 8), weight=float("nan")), "weight must be a finite"),
        (
            lambda: VolumeSource("a", (8, 8), labels=np.zeros((1, 8, 8))),
            r"volume 'a': labels must have 2 axes, found shape \(1, 8, 8\)",
        ),
        (lambda: VolumeSource("a", (8, 8), mask=[[1]]), "volume 'a': mask must be an array-like"),
    ],
)
def test_bad_volume_sources(make: Callable[[], VolumeSource], message: str) -> None:
    with pytest.raises(ScreeningError, match=message):
        make()


def test_bad_build_parameters(tmp_path: Path) -> None:
    sources = make_sources(tmp_path)
    with pytest.raises(GridError, match=r"patch_size\[0\] must be an integer, found 8.5"):
        build_patch_index(sources, (8.5, 8, 8))
    with pytest.raises(GridError, match=r"stride must be an integer, found 2\.5"):
        build_patch_index(sources, (8, 8, 8), stride=2.5)
    with pytest.raises(
        ScreeningError, match=r"volume 'a': shape \(16, 32, 32\) must have one axis"
    ):
        build_patch_index(sources, (8, 8))
    with pytest.raises(ScreeningError, match="unique and non-empty"):
        build_patch_index([sources[0], sources[0]], (8, 8, 8))
    with pytest.raises(ScreeningError, match="sources must be a sequence of VolumeSource"):
        build_patch_index(sources[0], (8, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(ScreeningError, match=r"min_mask_fraction must lie in \[0, 1\]"):
        build_patch_index(sources, (8, 8, 8), min_mask_fraction=1.5)


def test_window_count_is_checked_for_every_volume_before_screening(tmp_path: Path) -> None:
    class Unreadable:
        """Labels that fail if read: the refusal must come before any screening."""

        shape = (4096, 4096)
        dtype = np.dtype(np.uint8)

        def __getitem__(self, key: object) -> np.ndarray:
            raise AssertionError("read before the window count was checked")

    sources = [
        VolumeSource("small", (64, 64)),
        VolumeSource("typo", (4096, 4096), labels=Unreadable()),
    ]
    with pytest.raises(
        GridError,
        match=r"volume 'typo': grid over \(4096, 4096\) with patch \(8, 8\) and stride \(1, 1\): "
        r"16,719,921 windows \(4089 x 4089 per axis\) would take about 1\.2 GiB, more than "
        r"max_windows=1,000,000",
    ):
        build_patch_index(sources, (8, 8), stride=1, max_windows=1_000_000)
    index = build_patch_index(sources[:1], (8, 8), stride=1, max_windows=57 * 57)
    assert len(index) == 57 * 57
