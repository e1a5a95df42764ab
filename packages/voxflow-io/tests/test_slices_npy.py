"""Slice folders (natural order, TIFF and PNG) and memory-mapped .npy files."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from voxflow_io import open_volume

from .conftest import ramp


def test_tiff_slices_in_natural_order(tmp_path: Path, count_opens: type) -> None:
    reference = ramp((12, 20, 30))
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(12):
        tifffile.imwrite(folder / f"slice_{z}.tif", reference[z])  # slice_10 sorts after slice_9
    (folder / ".DS_Store").write_bytes(b"junk")
    volume = open_volume(folder)
    assert volume.shape == (12, 20, 30)
    assert volume.axes == "zyx"
    np.testing.assert_array_equal(volume[:], reference)
    with count_opens(folder) as opened:
        np.testing.assert_array_equal(volume.read((9, 3, 4), (2, 5, 6)), reference[9:11, 3:8, 4:10])
    assert sorted(Path(p).name for p in opened.paths) == ["slice_10.tif", "slice_9.tif"]


@pytest.mark.parametrize("channels", [None, 3])
def test_png_slices(tmp_path: Path, channels: int | None) -> None:
    shape = (5, 17, 23) if channels is None else (5, 17, 23, channels)
    reference = ramp(shape, "uint8")
    folder = tmp_path / "png"
    folder.mkdir()
    for z in range(5):
        (folder / f"{z:03d}.png").write_bytes(imagecodecs.png_encode(reference[z]))
    volume = open_volume(folder)
    assert volume.axes == ("zyx" if channels is None else "zyxc")
    np.testing.assert_array_equal(volume[1:4], reference[1:4])


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    reference = ramp((2, 6, 10, 12), "float32")
    np.save(tmp_path / "v.npy", reference)
    volume = open_volume(tmp_path / "v.npy")
    assert volume.axes == "czyx"
    np.testing.assert_array_equal(volume[1, 2:5], reference[1, 2:5])
    assert isinstance(volume._reader._array, np.memmap)
