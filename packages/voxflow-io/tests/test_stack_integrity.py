"""Stacks that would open with pages or slices silently dropped or shifted are refused; files
that are not regular files, and images that decode too large, are refused before decoding."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr

from voxflow_io import (
    DEFAULT_MAX_DECODED_BYTES,
    ImageTooLargeError,
    MetadataError,
    UnsupportedFormatError,
    open_volume,
)


def write_pages(path: Path, shapes: list[tuple[int, ...]], **kwargs: object) -> Path:
    """One page per shape, page i filled with i, no shape metadata (as many tools write)."""
    with tifffile.TiffWriter(path) as writer:
        for index, shape in enumerate(shapes):
            writer.write(np.full(shape, index, np.uint8), metadata=None, **kwargs)
    return path


@pytest.mark.parametrize(
    ("shapes", "groups"),
    [
        (
            [(8, 8), (8, 8), (9, 9), (8, 8), (8, 8)],
            r"pages 0-1, 3-4: \(8, 8\) uint8 \(compression 1\); page 2: \(9, 9\) uint8",
        ),
        ([(8, 8)] * 4 + [(9, 9)], r"pages 0-3: \(8, 8\) uint8 \(compression 1\); page 4: \(9, 9\)"),
    ],
    ids=["odd-page-inside", "odd-last-page"],
)
def test_tiff_pages_with_mixed_shapes(tmp_path: Path, shapes: list, groups: str) -> None:
    path = write_pages(tmp_path / "mixed.tif", shapes)
    with tifffile.TiffFile(path) as tif:  # what tifffile makes of it: the odd page dropped
        assert len(tif.series) == 2
    with pytest.raises(
        MetadataError,
        match=rf"mixed\.tif: pages do not share one shape, type and layout \({groups}",
    ):
        open_volume(path)


def test_tiff_stack_with_an_odd_page_of_another_width(tmp_path: Path) -> None:
    # >= 8 pages that agree at the pages tifffile samples (1, 7, -1): a "uniform" stack.
    path = write_pages(tmp_path / "wide.tif", [(8, 8)] * 3 + [(9, 9)] + [(8, 8)] * 6)
    with pytest.raises(
        MetadataError,
        match=r"wide\.tif: pages do not share one shape \(pages 0-2, 4-9: \(8, 8\) uint8 "
        r"\(compression 1\); page 3: \(9, 9\) uint8",
    ):
        open_volume(path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_stack_with_an_odd_page_of_another_height(
    tmp_path: Path, compression: str | None
) -> None:
    path = write_pages(
        tmp_path / "tall.tif", [(8, 8)] * 3 + [(9, 8)] + [(8, 8)] * 6, compression=compression
    )
    with tifffile.TiffFile(path) as tif:  # tifffile reads page 3 cut to 8 rows
        assert tif.series[0].shape == (10, 8, 8)
    with pytest.raises(
        MetadataError,
        match=r"tall\.tif: page 3 differs from page 0 \(\(8, 8\) uint8\) in "
        r"\{'ImageLength \(257\)': \(8, 9\)\}",
    ):
        open_volume(path)


def test_tiff_stack_with_an_odd_sample_type(tmp_path: Path) -> None:
    path = tmp_path / "types.tif"
    with tifffile.TiffWriter(path) as writer:
        for index in range(10):
            dtype = np.int8 if index == 5 else np.uint8
            writer.write(np.full((8, 8), index, dtype), metadata=None)
    with pytest.raises(MetadataError, match=r"page 5 differs from page 0 .*SampleFormat \(339\)"):
        open_volume(path)


def test_uniform_stack_still_opens(tmp_path: Path) -> None:
    reference = np.arange(12 * 8 * 8, dtype=np.uint16).reshape(12, 8, 8)
    path = tmp_path / "ok.tif"
    with tifffile.TiffWriter(path) as writer:
        for plane in reference:
            writer.write(plane, metadata=None, compression="zlib")
    np.testing.assert_array_equal(open_volume(path)[:], reference)


def test_imagej_hyperstack_with_fewer_frames_than_pages(tmp_path: Path) -> None:
    reference = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, reference, imagej=True, metadata={"axes": "TYX"})
    np.testing.assert_array_equal(open_volume(path)[:], reference)
    damaged = tmp_path / "four.tif"
    damaged.write_bytes(
        path.read_bytes().replace(b"images=6", b"images=4").replace(b"frames=6", b"frames=4")
    )
    with tifffile.TiffFile(damaged) as tif:  # tifffile trusts the metadata: 2 pages dropped
        assert tif.series[0].shape == (4, 4, 4)
    with pytest.raises(
        MetadataError,
        match=r"four\.tif: ImageJ metadata \{'images': 4, 'frames': 4\} describes 4 images "
        r"\(shape \(4, 4, 4\), axes 'TYX'\) but the file has 6 pages",
    ):
        open_volume(damaged)


def slice_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        tifffile.imwrite(folder / name, np.zeros((4, 4), np.uint8))
    return folder


def test_slice_folder_with_a_gap_in_its_numbering(tmp_path: Path) -> None:
    folder = slice_folder(tmp_path / "gap", [f"z{n:04d}.tif" for n in (0, 1, 2, 4, 5)])
    with pytest.raises(
        MetadataError,
        match=r"gap: slice numbering has a gap: 1 number\(s\) missing \(3\) between z0002\.tif "
        r"and z0004\.tif; .* Expected consecutive numbers 0\.\.5, found 5 files",
    ):
        open_volume(folder)


def test_slice_folder_with_a_repeated_number(tmp_path: Path) -> None:
    folder = slice_folder(tmp_path / "twice", ["1.tif", "01.tif", "2.tif"])
    with pytest.raises(MetadataError, match=r"slices 01\.tif and 1\.tif have the same number 1"):
        open_volume(folder)


def test_slice_folders_without_gaps_open(tmp_path: Path) -> None:
    numbered = slice_folder(tmp_path / "a", [f"scan_2024_z{n}.tif" for n in range(5, 12)])
    assert open_volume(numbered).shape == (7, 4, 4)  # starts anywhere; fixed numbers ignored
    named = slice_folder(tmp_path / "b", ["top.tif", "middle.tif", "bottom.tif"])
    assert open_volume(named).shape == (3, 4, 4)  # no numbered pattern: natural order


def test_named_pipe_tiff_is_refused_before_opening(tmp_path: Path, fails_within_20s: None) -> None:
    os.mkfifo(tmp_path / "pipe.tif")
    with pytest.raises(
        UnsupportedFormatError, match=r"pipe\.tif: is a named pipe \(FIFO\), not a regular file"
    ):
        open_volume(tmp_path / "pipe.tif")


def test_named_pipe_in_a_slice_folder(tmp_path: Path, fails_within_20s: None) -> None:
    folder = slice_folder(tmp_path / "s", ["0.tif"])
    os.mkfifo(folder / "1.tif")
    with pytest.raises(
        UnsupportedFormatError,
        match=r"s/1\.tif: is a named pipe \(FIFO\), expected a regular slice image file",
    ):
        open_volume(folder)


def png_header_only(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    """A PNG signature and IHDR chunk: enough for the header check, nothing to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


def test_png_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    folder = tmp_path / "bomb"
    folder.mkdir()
    # 30000 x 30000 RGBA 16-bit: 7.2 GB decoded for any window, however small.
    (folder / "0.png").write_bytes(png_header_only(30000, 30000, 16, 6))
    with pytest.raises(
        ImageTooLargeError,
        match=r"bomb/0\.png: slice of \(30000, 30000, 4\) uint16 would decode to 7200000000 bytes "
        rf"\(6\.71 GiB\), more than max_decoded_bytes={DEFAULT_MAX_DECODED_BYTES}",
    ):
        open_volume(folder)


def test_decoded_size_limit_is_configurable(tmp_path: Path) -> None:
    folder = tmp_path / "png"
    folder.mkdir()
    reference = np.arange(2 * 64 * 64, dtype=np.uint16).reshape(2, 64, 64)
    for z in range(2):
        (folder / f"{z}.png").write_bytes(imagecodecs.png_encode(reference[z]))
    with pytest.raises(
        ImageTooLargeError, match=r"0\.png: slice of \(64, 64\) uint16 would decode to 8192 bytes"
    ):
        open_volume(folder, max_decoded_bytes=8191)
    np.testing.assert_array_equal(open_volume(folder, max_decoded_bytes=8192)[:], reference)


def test_decoded_size_limit_applies_to_tiff_strips_and_zarr_chunks(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((2, 64, 64), np.uint8), compression="zlib")
    with pytest.raises(
        ImageTooLargeError,
        match=r"z\.tif \(series 0, level 0\): every strip \(\(64, 64\) of uint8\) would",
    ):
        open_volume(tmp_path / "z.tif", max_decoded_bytes=1000)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(64, 64), chunks=(32, 32), dtype="uint16")
    with pytest.raises(
        ImageTooLargeError, match=r"a\.zarr: every chunk \(\(32, 32\) of uint16\) would decode"
    ):
        open_volume(tmp_path / "a.zarr", max_decoded_bytes=1000)
