"""Windows of tiled TIFFs decode only their tiles, in parallel, and equal tifffile's own read."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from voxflow_io import CorruptVolumeError, ImageTooLargeError, open_volume
from voxflow_io._tiff import _TiffZarrReader
from voxflow_io._tiff_tiles import TiledSeriesReader

from .conftest import ramp

TILE = (32, 48)


def random_boxes(
    shape: tuple[int, ...], tile: tuple[int, int], count: int, seed: int
) -> list[tuple[slice, ...]]:
    """Half tile-aligned windows, half at random offsets and sizes (edge tiles included)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for number in range(count):
        box = []
        for axis, size in enumerate(shape):
            page_axis = axis - (len(shape) - 2)
            if number % 2 == 0 and page_axis in (0, 1):
                step = tile[page_axis]
                first = int(rng.integers(0, (size - 1) // step + 1))
                last = int(rng.integers(first, (size - 1) // step + 1))
                box.append(slice(first * step, min(size, (last + 1) * step)))
            else:
                start = int(rng.integers(0, size))
                box.append(slice(start, int(rng.integers(start + 1, size + 1))))
        boxes.append(tuple(box))
    boxes.append(tuple(slice(0, n) for n in shape))
    return boxes


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32"])
@pytest.mark.parametrize(
    ("compression", "predictor"),
    [("zlib", False), ("zstd", False), ("lzw", True), ("zlib", True), ("zstd", True)],
)
@pytest.mark.parametrize("shape", [(75, 100), (5, 75, 100)], ids=["2d", "3d"])
def test_random_windows_equal_tifffile(
    tmp_path: Path, dtype: str, compression: str, predictor: bool, shape: tuple[int, ...]
) -> None:
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(
        path, ramp(shape, dtype), tile=TILE, compression=compression, predictor=predictor
    )
    reference = tifffile.imread(path)
    with tifffile.TiffFile(path) as tif:
        expected_predictor = 1 if not predictor else (3 if dtype == "float32" else 2)
        assert tif.pages.first.predictor == expected_predictor
    volume = open_volume(path)
    assert volume.shape == shape
    assert volume.dtype == reference.dtype
    for box in random_boxes(shape, TILE, 12, seed=len(shape)):
        window = volume[box]
        assert window.flags.c_contiguous
        np.testing.assert_array_equal(window, reference[box], err_msg=str(box))
    assert isinstance(volume._reader, TiledSeriesReader)


def test_big_endian_bigtiff(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path,
        ramp((3, 70, 90), "uint16"),
        photometric="minisblack",
        tile=(16, 32),
        compression="zstd",
        predictor=True,
        byteorder=">",
        bigtiff=True,
    )
    reference = tifffile.imread(path)
    volume = open_volume(path)
    assert isinstance(volume._reader, TiledSeriesReader)
    for box in random_boxes(volume.shape, (16, 32), 8, seed=3):
        np.testing.assert_array_equal(volume[box], reference[box])
    assert volume[:].dtype.isnative


def test_contiguous_samples(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(
        path, ramp((4, 40, 50, 3), "uint8"), tile=(16, 16), compression="zlib", photometric="rgb"
    )
    reference = tifffile.imread(path)
    volume = open_volume(path)
    assert volume.shape == (4, 40, 50, 3)
    assert isinstance(volume._reader, TiledSeriesReader)
    for box in random_boxes((4, 40, 50), (16, 16), 8, seed=5):
        for samples in (slice(0, 3), slice(1, 2)):
            np.testing.assert_array_equal(volume[(*box, samples)], reference[(*box, samples)])


def test_ome_hyperstack_and_pyramid_level(tmp_path: Path) -> None:
    path = tmp_path / "image.ome.tif"
    data = ramp((2, 3, 4, 60, 70), "uint16")
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data, tile=(32, 32), compression="zstd", subifds=1, metadata={"axes": "TCZYX"})
        tif.write(data[..., ::2, ::2], tile=(16, 16), compression="zstd", subfiletype=1)
    reference = tifffile.imread(path)
    volume = open_volume(path)
    assert isinstance(volume._reader, TiledSeriesReader)
    for box in random_boxes(data.shape, (32, 32), 8, seed=7):
        np.testing.assert_array_equal(volume[box], reference[box])
    level1 = open_volume(path, level=1)
    assert isinstance(level1._reader, TiledSeriesReader)
    np.testing.assert_array_equal(
        level1[1, :, 2:4, 5:29, 3:], tifffile.imread(path, level=1)[1, :, 2:4, 5:29, 3:]
    )


def test_strips_and_jpeg_stay_on_tifffiles_store(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "strips.tif",
        ramp((3, 40, 40), "uint16"),
        compression="zlib",
        photometric="minisblack",
    )
    tifffile.imwrite(
        tmp_path / "jpeg.tif",
        ramp((40, 48), "uint8"),
        tile=(16, 16),
        compression="jpeg",
        photometric="minisblack",
    )
    for name in ("strips.tif", "jpeg.tif"):
        volume = open_volume(tmp_path / name)
        np.testing.assert_array_equal(
            volume[..., 3:30, 5:33], tifffile.imread(tmp_path / name)[..., 3:30, 5:33]
        )
        assert isinstance(volume._reader, _TiffZarrReader)


def test_empty_tiles_hold_nodata(tmp_path: Path) -> None:
    path = tmp_path / "sparse.tif"
    data = ramp((2, 64, 64), "uint16") + 1
    tifffile.imwrite(path, data, tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(path, mode="r+") as tif:
        page = tif.pages[1]
        counts = list(page.databytecounts)
        counts[2] = 0  # page 1, tile row 1, column 0: empty
        page.tags["TileByteCounts"].overwrite(counts)
        assert tif.pages[1].asarray()[32:, :32].max() == 0  # tifffile's page reader agrees
    # (tifffile.imread of the series also blanks tile 3 beside it: not a reference here)
    reference = data.copy()
    reference[1, 32:, :32] = 0  # the file's nodata
    volume = open_volume(path)
    for box in random_boxes((2, 64, 64), (32, 32), 10, seed=11):
        np.testing.assert_array_equal(volume[box], reference[box])


def corrupt_tile(path: Path, page: int, tile: int) -> None:
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[page].dataoffsets[tile]
        count = tif.pages[page].databytecounts[tile]
    with path.open("r+b") as handle:  # garble the codec's header and the middle
        handle.seek(offset)
        handle.write(b"\xff\x00\x13\x37" * 2)
        handle.seek(offset + count // 3)
        handle.write(b"\xff\x00\x13\x37" * (count // 8))


@pytest.mark.parametrize("compression", ["zlib", "zstd", "lzw"])
def test_corrupt_tile_names_file_and_tile(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "damaged.tif"
    data = ramp((3, 64, 96), "uint16")
    tifffile.imwrite(path, data, tile=(32, 32), compression=compression, photometric="minisblack")
    corrupt_tile(path, page=1, tile=4)  # tile row 1, column 1
    volume = open_volume(path)
    np.testing.assert_array_equal(volume[:, :32], data[:, :32])  # tiles before it
    np.testing.assert_array_equal(volume[1, 32:, 64:], data[1, 32:, 64:])
    with pytest.raises(CorruptVolumeError, match=r"damaged\.tif.*tile 4 of page 1.*decode"):
        volume[1, 40:50, 40:50]


def test_truncated_tile_names_file_and_tile(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, ramp((2, 64, 64), "uint16"), tile=(32, 32), compression="zstd")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[1]
        order = np.argsort(page.dataoffsets)
        last = int(order[-1])
        end = page.dataoffsets[last] + page.databytecounts[last]
    volume = open_volume(path)  # opens before the file is cut
    with path.open("r+b") as handle:
        handle.truncate(end - 5)
    with pytest.raises(CorruptVolumeError, match=rf"cut\.tif.*tile {last} of page 1.*truncated"):
        volume[1]


def test_tile_larger_than_max_decoded_bytes(tmp_path: Path) -> None:
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, ramp((2, 64, 64), "uint16"), tile=(32, 32), compression="zlib")
    with pytest.raises(ImageTooLargeError, match=r"tiles\.tif.*tile"):
        open_volume(path, max_decoded_bytes=32 * 32 * 2 - 1)
    assert (
        open_volume(path, max_decoded_bytes=32 * 32 * 2)[1, 5, 5] == tifffile.imread(path)[1, 5, 5]
    )


def test_tiles_decode_on_the_pool_and_reads_may_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, ramp((8, 96, 96), "uint16"), tile=(16, 16), compression="zstd")
    reference = tifffile.imread(path)
    volume = open_volume(path)
    reader = volume._reader
    assert isinstance(reader, TiledSeriesReader)
    decode = reader._decode
    seen: list[tuple[int, str]] = []

    def recording_decode(data: bytes, index: int, **kwargs: object) -> object:
        seen.append((index, threading.current_thread().name))
        return decode(data, index, **kwargs)

    monkeypatch.setattr(reader, "_decode", recording_decode)
    np.testing.assert_array_equal(volume[2:4, 20:40, 30:50], reference[2:4, 20:40, 30:50])
    # rows 16-47 and columns 16-63 of a 6x6 grid: tile rows 1-2, columns 1-3, on 2 pages
    assert sorted(index for index, _ in seen) == sorted([7, 8, 9, 13, 14, 15] * 2)
    assert all(name.startswith("voxflow-io") for _, name in seen)
    boxes = random_boxes(reference.shape, (16, 16), 24, seed=13)
    with ThreadPoolExecutor(4) as pool:
        windows = list(pool.map(lambda box: volume[box], boxes))
    for box, window in zip(boxes, windows, strict=True):
        np.testing.assert_array_equal(window, reference[box])
