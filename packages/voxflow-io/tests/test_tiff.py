"""TIFF flavours written by tifffile read back equal, with axes and voxel sizes from metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import tifffile.tifffile

from voxflow_io import open_volume
from voxflow_io._tiff import _MemmapReader, _TiffZarrReader

from .conftest import ramp


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"bigtiff": True},
        {"tile": (16, 32)},
        {"compression": "zlib"},
        {"compression": "lzw"},
        {"compression": "zstd"},
        {"tile": (16, 16), "compression": "zstd", "bigtiff": True},
    ],
    ids=["contiguous", "bigtiff", "tiled", "zlib", "lzw", "zstd", "tiled-zstd-bigtiff"],
)
def test_stack_flavours(tmp_path: Path, volume_data: np.ndarray, kwargs: dict) -> None:
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, volume_data, **kwargs)
    volume = open_volume(path)
    assert volume.shape == volume_data.shape
    assert volume.axes == "zyx"
    np.testing.assert_array_equal(volume[:], volume_data)
    np.testing.assert_array_equal(
        volume.read((2, 9, 13), (5, 30, 40)), volume_data[2:7, 9:39, 13:53]
    )
    if "tile" in kwargs:
        assert volume.chunks == (1, *kwargs["tile"])


def test_uncompressed_contiguous_is_memory_mapped(tiff_stack: Path) -> None:
    volume = open_volume(tiff_stack)
    volume.read((0, 0, 0), (1, 1, 1))
    assert isinstance(volume._reader, _MemmapReader)
    compressed = tiff_stack.with_name("c.tif")
    tifffile.imwrite(
        compressed, np.zeros((3, 8, 8), np.uint8), compression="zlib", photometric="minisblack"
    )
    volume = open_volume(compressed)
    assert isinstance(volume._reader, _TiffZarrReader)


def test_2d_tiff(tmp_path: Path) -> None:
    reference = ramp((33, 45), "float32")
    tifffile.imwrite(tmp_path / "plane.tif", reference)
    volume = open_volume(tmp_path / "plane.tif")
    assert volume.axes == "yx"
    np.testing.assert_array_equal(volume[5:20, 7:], reference[5:20, 7:])


def test_ome_tiff_axes_voxel_size_and_levels(tmp_path: Path) -> None:
    path = tmp_path / "image.ome.tif"
    reference = ramp((2, 3, 4, 64, 64), "uint8")
    with tifffile.TiffWriter(path, ome=True) as tif:
        metadata = {
            "axes": "TCZYX",
            "PhysicalSizeX": 0.25,
            "PhysicalSizeY": 0.25,
            "PhysicalSizeZ": 1.5,
        }
        tif.write(reference, tile=(32, 32), compression="zlib", subifds=1, metadata=metadata)
        tif.write(reference[..., ::2, ::2], tile=(32, 32), compression="zlib", subfiletype=1)
    volume = open_volume(path)
    assert volume.axes == "tczyx"
    assert volume.voxel_size == (1.0, 1.0, 1.5, 0.25, 0.25)
    assert volume.unit == "micrometer"
    np.testing.assert_array_equal(volume[1, 2, 1:3, 10:50, 5:9], reference[1, 2, 1:3, 10:50, 5:9])
    level1 = open_volume(path, level=1)
    np.testing.assert_array_equal(level1[:], reference[..., ::2, ::2])


def test_imagej_hyperstack(tmp_path: Path) -> None:
    path = tmp_path / "hyper.tif"
    reference = ramp((3, 5, 2, 24, 28), "uint16")  # T Z C Y X, ImageJ's order
    tifffile.imwrite(
        path,
        reference,
        imagej=True,
        resolution=(1 / 0.4, 1 / 0.4),
        metadata={"axes": "TZCYX", "spacing": 2.0, "unit": "um"},
    )
    volume = open_volume(path)
    assert volume.axes == "tzcyx"
    assert volume.voxel_size == pytest.approx((1.0, 2.0, 1.0, 0.4, 0.4))
    np.testing.assert_array_equal(volume[2, 1:4, 1], reference[2, 1:4, 1])


def test_window_decodes_only_the_tiles_it_touches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiled.tif"
    reference = ramp((6, 64, 64), "uint16")
    tifffile.imwrite(path, reference, tile=(16, 16), compression="zlib")
    reads: list[int] = []
    original = tifffile.tifffile.FileCache.read

    def counting_read(self, filehandle, offset, bytecount, whence=0):
        reads.append(offset)
        return original(self, filehandle, offset, bytecount, whence)

    monkeypatch.setattr(tifffile.tifffile.FileCache, "read", counting_read)
    volume = open_volume(path)
    assert reads == []
    window = volume.read((2, 10, 10), (2, 10, 20))  # pages 2-3; tile rows 0-1, tile cols 0-1
    np.testing.assert_array_equal(window, reference[2:4, 10:20, 10:30])
    with tifffile.TiffFile(path) as tif:
        expected = {
            tif.pages[p].dataoffsets[row * 4 + col]
            for p in (2, 3)
            for row in (0, 1)
            for col in (0, 1)
        }
    assert set(reads) == expected
    assert len(reads) == 8
