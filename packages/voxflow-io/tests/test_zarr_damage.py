"""Damaged zarr stores: every chunk decodes to exactly its size or fails naming the chunk file
(tensorstore's checks); a deleted store is not an array of fill values; damaged metadata names
its file."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec

from voxflow_io import (
    CorruptVolumeError,
    MetadataError,
    VolumeNotFoundError,
    create_ome_zarr,
    open_volume,
)

REFERENCE = np.arange(64, dtype=np.uint8).reshape(8, 8)


def gzip_array(tmp_path: Path, zarr_format: int) -> tuple[Path, Path]:
    """An (8, 8) uint8 gzip array of 4x4 chunks and the path of its chunk (0, 1)."""
    path = tmp_path / f"gzip-v{zarr_format}.zarr"
    compressors = [GzipCodec()] if zarr_format == 3 else numcodecs.GZip()
    array = zarr.create_array(
        str(path),
        shape=(8, 8),
        chunks=(4, 4),
        dtype="uint8",
        compressors=compressors,
        zarr_format=zarr_format,
    )
    array[:] = REFERENCE
    chunk = path / ("c/0/1" if zarr_format == 3 else "0.1")
    assert chunk.is_file()
    return path, chunk


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_empty_short_or_truncated_gzip_chunk_is_an_error_naming_the_chunk(
    tmp_path: Path, zarr_format: int
) -> None:
    path, chunk = gzip_array(tmp_path, zarr_format)
    np.testing.assert_array_equal(open_volume(path)[:], REFERENCE)  # healthy first
    name = re.escape(str(chunk))
    healthy = chunk.read_bytes()
    for damaged in (b"", gzip.compress(bytes(10)), healthy[:12]):  # 10 of 16 bytes; truncated
        chunk.write_bytes(damaged)
        with pytest.raises(CorruptVolumeError, match=rf"failed: .*{name}.*Not enough data"):
            open_volume(path)[:]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("read_before", [False, True])
def test_store_deleted_after_open_is_not_read_as_zeros(
    tmp_path: Path, zarr_format: int, read_before: bool
) -> None:
    path = tmp_path / "gone.zarr"
    array = zarr.create_array(
        str(path), shape=(8, 8), chunks=(4, 4), dtype="uint8", zarr_format=zarr_format
    )
    array[:] = 3
    volume = open_volume(path)
    if read_before:  # this process's tensorstore handle is open: the metadata check says it
        volume[:1, :1]
    shutil.rmtree(path)
    message = r"gone\.zarr: .*(is gone: the store was deleted|does not exist)"
    with pytest.raises(VolumeNotFoundError, match=message):
        volume[:2, :2]


def test_store_rewritten_with_another_dtype_before_the_first_read(tmp_path: Path) -> None:
    """Opened as uint16, rewritten as float32 before this process read it: an error, not
    float32 voxels cast to uint16."""
    path = tmp_path / "rewritten.zarr"
    zarr.create_array(str(path), data=np.ones((8, 8), np.uint16), chunks=(4, 4))
    volume = open_volume(path)
    zarr.create_array(
        str(path), data=np.full((8, 8), -1.5, np.float32), chunks=(4, 4), overwrite=True
    )
    with pytest.raises(
        MetadataError, match=r"changed since it was opened: expected shape \(8, 8\) uint16"
    ):
        volume[:2, :2]


def test_sharded_store_deleted_after_open_is_not_read_as_zeros(tmp_path: Path) -> None:
    path = tmp_path / "sharded.zarr"
    zarr.create_array(str(path), data=np.full((8, 8), 3, np.uint8), chunks=(2, 2), shards=(4, 4))
    volume = open_volume(path)
    volume[:1, :1]  # this process's tensorstore handle is open
    shutil.rmtree(path)
    with pytest.raises(VolumeNotFoundError, match=r"zarr\.json is gone: the store was deleted"):
        volume[:2, :2]


def test_missing_chunks_of_a_healthy_store_still_read_as_fill_value(tmp_path: Path) -> None:
    path = tmp_path / "sparse.zarr"
    array = zarr.create_array(str(path), shape=(8, 8), chunks=(4, 4), dtype="int16", fill_value=-5)
    array[4:, 4:] = 1
    expected = np.full((8, 8), -5, np.int16)
    expected[4:, 4:] = 1
    np.testing.assert_array_equal(open_volume(path)[:], expected)


@pytest.mark.parametrize(("zarr_format", "document"), [(3, "zarr.json"), (2, ".zarray")])
def test_damaged_metadata_names_the_file(tmp_path: Path, zarr_format: int, document: str) -> None:
    path = tmp_path / "a.zarr"
    zarr.create_array(str(path), shape=(4, 4), dtype="uint8", zarr_format=zarr_format)
    (path / document).write_text('{"zarr_format": ')
    with pytest.raises(
        CorruptVolumeError, match=rf"a\.zarr/{document}: damaged zarr metadata, not JSON"
    ):
        open_volume(path)


def test_metadata_that_zarr_rejects_names_the_store(tmp_path: Path) -> None:
    path = tmp_path / "a.zarr"
    zarr.create_array(str(path), shape=(4, 4), dtype="uint8")
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    with pytest.raises(MetadataError, match=r"a\.zarr: invalid zarr metadata \(zarr\.json\)"):
        open_volume(path)


def test_damaged_level_array_metadata_inside_an_image(tmp_path: Path) -> None:
    path = tmp_path / "i.ome.zarr"
    create_ome_zarr(path, shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx").finish()
    (path / "0" / "zarr.json").write_text("not json")
    with pytest.raises(CorruptVolumeError, match=r"i\.ome\.zarr/0/zarr\.json: damaged zarr"):
        open_volume(path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zero_chunk_shape(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "a.zarr"
    zarr.create_array(
        str(path), shape=(8, 8), chunks=(4, 4), dtype="uint8", zarr_format=zarr_format
    )
    document = path / ("zarr.json" if zarr_format == 3 else ".zarray")
    metadata = json.loads(document.read_text())
    if zarr_format == 3:
        metadata["chunk_grid"]["configuration"]["chunk_shape"] = [0, 4]
    else:
        metadata["chunks"] = [0, 4]
    document.write_text(json.dumps(metadata))
    with pytest.raises(
        MetadataError, match=r"a\.zarr: chunk shape \(0, 4\) in the array metadata must be positive"
    ):
        open_volume(path)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_ome_scale_names_store_and_transform(tmp_path: Path, value: float) -> None:
    path = tmp_path / "i.ome.zarr"
    create_ome_zarr(path, shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx").finish()
    metadata = json.loads((path / "zarr.json").read_text())
    dataset = metadata["attributes"]["ome"]["multiscales"][0]["datasets"][0]
    dataset["coordinateTransformations"][0]["scale"] = [1.0, value]
    (path / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(
        MetadataError,
        match=rf"i\.ome\.zarr: datasets\[0\] \(path '0'\) scale transform \[1\.0, {value}\] of "
        rf"level 0 has {value} for axis 'x'; scale values must be finite and positive",
    ):
        open_volume(path)


def test_bad_multiscale_wide_scale(tmp_path: Path) -> None:
    path = tmp_path / "i.ome.zarr"
    create_ome_zarr(path, shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx").finish()
    metadata = json.loads((path / "zarr.json").read_text())
    metadata["attributes"]["ome"]["multiscales"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [-2.0, 1.0]}
    ]
    (path / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(MetadataError, match=r"multiscale-wide scale transform \[-2\.0, 1\.0\]"):
        open_volume(path)
