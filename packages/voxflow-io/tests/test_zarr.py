"""Zarr arrays, groups and OME-Zarr images read back equal to what zarr-python wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from voxflow_io import open_volume

from .conftest import ramp


def test_array_reads_equal_numpy(zarr_array_path: Path, volume_data: np.ndarray) -> None:
    volume = open_volume(zarr_array_path)
    assert volume.shape == volume_data.shape
    assert volume.dtype == volume_data.dtype
    assert volume.axes == "zyx"
    assert volume.chunks == (8, 16, 32)
    np.testing.assert_array_equal(volume[:], volume_data)
    np.testing.assert_array_equal(
        volume.read((3, 7, 11), (9, 20, 33)), volume_data[3:12, 7:27, 11:44]
    )


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_windows_and_indices(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    shape = data.draw(st.tuples(*[st.integers(1, 30)] * 3))
    chunks = data.draw(st.tuples(*[st.integers(1, 12)] * 3))
    fmt = data.draw(st.sampled_from([2, 3]))
    reference = ramp(shape, "int16")
    path = tmp_path_factory.mktemp("h") / "a.zarr"
    array = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="int16", zarr_format=fmt)
    array[:] = reference
    volume = open_volume(path)
    start = [data.draw(st.integers(0, n - 1)) for n in shape]
    size = [data.draw(st.integers(1, n - s)) for n, s in zip(shape, start, strict=True)]
    window = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    np.testing.assert_array_equal(volume.read(start, size), reference[window])
    step = data.draw(st.integers(1, 4))
    index = (start[0], slice(start[1], None, step), ...)
    np.testing.assert_array_equal(volume[index], reference[index])


def test_missing_chunks_read_as_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "sparse.zarr"
    array = zarr.create_array(
        str(path), shape=(8, 8), chunks=(4, 4), dtype="float32", fill_value=7.5
    )
    array[:4, :4] = 1.0
    expected = np.full((8, 8), 7.5, np.float32)
    expected[:4, :4] = 1.0
    np.testing.assert_array_equal(open_volume(path)[:], expected)


@pytest.mark.parametrize("fmt", [2, 3])
def test_window_reads_only_touched_chunk_files(
    tmp_path: Path, fmt: int, count_opens: type, kvstore_reads: type
) -> None:
    """Opening reads metadata only; a window reads exactly the chunk files it touches (counted
    by tensorstore's own kvstore counters, bytes checked against the files' sizes)."""
    path = tmp_path / "lazy.zarr"
    array = zarr.create_array(
        str(path), shape=(32, 32, 32), chunks=(8, 8, 8), dtype="uint8", zarr_format=fmt
    )
    array[:] = ramp((32, 32, 32), "uint8")
    with count_opens(path) as opened, kvstore_reads("file") as reads:
        volume = open_volume(path)
    assert not [p for p in opened.paths if "/c/" in p or p.split("/")[-1][0].isdigit()]
    assert reads.reads == 0
    volume.read((0, 0, 0), (1, 1, 1))  # this process's tensorstore handle opens
    with kvstore_reads("file") as reads:
        volume.read((4, 8, 0), (8, 8, 9))  # z 4..12 -> 2 chunks, y 8..16 -> 1, x 0..9 -> 2
    touched = [(z, 1, x) for z in (0, 1) for x in (0, 1)]
    separator = "/" if fmt == 3 else "."
    prefix = "c/" if fmt == 3 else ""
    files = [path / f"{prefix}{separator.join(map(str, index))}" for index in touched]
    assert reads.reads == 4
    assert reads.bytes == sum(f.stat().st_size for f in files)


def test_sharded_window_reads_byte_ranges_of_one_shard(tmp_path: Path, kvstore_reads: type) -> None:
    path = tmp_path / "sharded.zarr"
    reference = ramp((16, 24, 24))
    array = zarr.create_array(
        str(path),
        shape=reference.shape,
        chunks=(4, 4, 4),
        shards=(8, 12, 12),
        dtype="uint16",
        compressors=None,
    )
    array[:] = reference
    volume = open_volume(path)
    np.testing.assert_array_equal(volume.read((5, 3, 13), (6, 10, 9)), reference[5:11, 3:13, 13:22])
    shard = path / "c" / "0" / "0" / "0"
    with kvstore_reads("file") as reads:
        np.testing.assert_array_equal(volume.read((4, 4, 4), (4, 4, 4)), reference[4:8, 4:8, 4:8])
    # one chunk of the 18 in the shard: its 128 bytes and the shard index, not the whole shard
    assert 4 * 4 * 4 * 2 <= reads.bytes < shard.stat().st_size / 4


def test_group_key_and_dimension_names(tmp_path: Path) -> None:
    path = tmp_path / "group.zarr"
    group = zarr.open_group(str(path), mode="w")
    reference = ramp((3, 10, 12), "uint8")
    group.create_array(
        "raw/data", shape=reference.shape, dtype="uint8", dimension_names=["c", "y", "x"]
    )
    group["raw/data"][:] = reference
    volume = open_volume(path, key="raw/data")
    assert volume.axes == "cyx"
    np.testing.assert_array_equal(volume[:], reference)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels_axes_and_voxel_size(tmp_path: Path, version: str) -> None:
    ome_zarr_writer = pytest.importorskip("ome_zarr.writer")
    from ome_zarr.io import parse_url

    # Written by the independent ome-zarr package, read back by voxflow.
    path = tmp_path / f"image-{version}.ome.zarr"
    reference = ramp((2, 16, 32, 32))
    fmt = {"0.4": "FormatV04", "0.5": "FormatV05"}[version]
    import ome_zarr.format as formats

    store = parse_url(str(path), mode="w", fmt=getattr(formats, fmt)()).store
    root = zarr.open_group(store=store, mode="w", zarr_format=2 if version == "0.4" else 3)
    ome_zarr_writer.write_image(
        reference,
        root,
        axes="czyx",
        scale={"z": 2.0, "y": 0.5, "x": 0.5},
        scale_factors=[2, 4],
        fmt=getattr(formats, fmt)(),
        method="nearest",
        storage_options={"chunks": (1, 8, 16, 16)},
    )
    volume = open_volume(path)
    assert volume.axes == "czyx"
    assert volume.voxel_size == (1.0, 2.0, 0.5, 0.5)
    np.testing.assert_array_equal(volume[:], reference)
    level1 = open_volume(path, level=1)
    assert level1.voxel_size == (1.0, 2.0, 1.0, 1.0)  # ome-zarr keeps z at every level
    assert level1.shape[2:] == (16, 16)
