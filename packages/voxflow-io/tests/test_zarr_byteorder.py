"""Byte order of zarr stores: NGFF 0.4 (zarr v2) multi-byte dtypes and big-endian stores (v2 dtype ``>u2``, v3 ``bytes`` codec ``endian: big``) read byte-swapped into
native order. Every window is compared with the numpy array the store was written from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

from voxflow_io import Volume, create_ome_zarr, open_volume

from .conftest import ramp

SHAPE = (12, 30, 41)
CHUNKS = (5, 8, 16)
WINDOWS = [
    ((0, 0, 0), SHAPE),
    ((0, 0, 0), CHUNKS),
    ((3, 7, 5), (6, 17, 30)),
    ((11, 29, 40), (1, 1, 1)),
]


def _assert_windows(volume: Volume, data: np.ndarray) -> None:
    for start, size in WINDOWS:
        window = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
        got = volume.read(start, size)
        assert got.dtype == data.dtype.newbyteorder("=")
        assert got.dtype.isnative
        np.testing.assert_array_equal(got, data[window])


@pytest.mark.parametrize("stored", ["<u2", ">u2", "<i4", ">i4", "<f4", ">f8", "|u1"])
@pytest.mark.parametrize("compressor", ["zstd", None])
def test_zarr_v2_either_byte_order_reads_in_native_order(
    tmp_path: Path, stored: str, compressor: str | None
) -> None:
    data = ramp(SHAPE, np.dtype(stored).newbyteorder("=").name).astype(stored)
    path = tmp_path / "v2.zarr"
    array = zarr.create_array(
        str(path),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype=stored,
        zarr_format=2,
        compressors="auto" if compressor else None,
    )
    array[:] = data
    assert (path / ".zarray").read_text().count(f'"{stored}"') == 1  # the order as stored

    volume = open_volume(path)
    assert volume.dtype == np.dtype(stored).newbyteorder("=")
    assert volume.dtype.isnative
    _assert_windows(volume, data)


@pytest.mark.parametrize("endian", ["little", "big"])
def test_zarr_v3_bytes_codec_either_endian_reads_in_native_order(
    tmp_path: Path, endian: str
) -> None:
    data = ramp(SHAPE)
    path = tmp_path / "v3.zarr"
    array = zarr.create_array(
        str(path),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="uint16",
        serializer=BytesCodec(endian=endian),
        compressors=ZstdCodec(),
    )
    array[:] = data
    volume = open_volume(path)
    assert volume.dtype == np.dtype("uint16")
    _assert_windows(volume, data)


def test_big_endian_chunk_bytes_on_disk_are_big_endian(tmp_path: Path) -> None:
    """The store really holds big-endian bytes (so the reads above swap them)."""
    path = tmp_path / "raw.zarr"
    array = zarr.create_array(
        str(path), shape=(1, 4), chunks=(1, 4), dtype=">u2", zarr_format=2, compressors=None
    )
    array[:] = np.array([[1, 2, 3, 258]], dtype=np.uint16)
    assert (path / "0.0").read_bytes() == b"\x00\x01\x00\x02\x00\x03\x01\x02"
    np.testing.assert_array_equal(open_volume(path)[:], [[1, 2, 3, 258]])


@pytest.mark.filterwarnings("ignore:Call to deprecated class Scaler:DeprecationWarning")
def test_ngff_04_uint16_image_reads(tmp_path: Path) -> None:
    """An NGFF 0.4 image (zarr v2, ``<u2`` in .zarray): written by voxflow-io and by ome-zarr."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    data = ramp(SHAPE)
    ours = tmp_path / "ours.ome.zarr"
    with create_ome_zarr(
        ours, shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx", ngff_version="0.4"
    ) as writer:
        writer.write_region((0, 0, 0), data)
    theirs = tmp_path / "theirs.ome.zarr"
    root = zarr.open_group(str(theirs), mode="w", zarr_format=2)
    write_image(
        data,
        root,
        scale_factors=(),
        axes="zyx",
        fmt=FormatV04(),
        storage_options={"chunks": CHUNKS},
    )

    for path, dataset in ((ours, "0"), (theirs, "s0")):
        assert '"<u2"' in (path / dataset / ".zarray").read_text()
        volume = open_volume(path)
        assert volume.axes == "zyx"
        _assert_windows(volume, data)
