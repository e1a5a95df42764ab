"""OME-Zarr writing: valid NGFF (checked by ome-zarr-models), readable by ome-zarr, correct
pyramids (checked against a brute-force numpy reference), concurrent chunk-aligned writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import zarr

from voxflow_io import OmeZarrWriter, create_ome_zarr, open_volume

from .conftest import ramp


def validate_image(path: Path, version: str) -> None:
    """Validate with the independent ome-zarr-models package (raises on invalid metadata)."""
    import ome_zarr_models
    import ome_zarr_models.v04.image
    import ome_zarr_models.v05.image

    model = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"), version=version)
    expected = {"0.4": ome_zarr_models.v04.image.Image, "0.5": ome_zarr_models.v05.image.Image}
    assert isinstance(model, expected[version])


def read_with_ome_zarr(path: Path) -> list[np.ndarray]:
    """All pyramid levels as read by the ome-zarr reader."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(path)))())
    return [np.asarray(level) for level in nodes[0].data]


def brute_force_mean(data: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Mean over each factor block, edge blocks over the voxels they have; loops, no reshapes."""
    out_shape = tuple(-(-n // f) for n, f in zip(data.shape, factors, strict=True))
    out = np.empty(out_shape, np.float64)
    for index in np.ndindex(*out_shape):
        block = data[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors, strict=True))]
        out[index] = block.mean()
    return out


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("compressor", ["zstd", "blosc-lz4", "none"])
def test_created_image_is_valid_ngff_and_reads_back(
    tmp_path: Path, version: str, compressor: str
) -> None:
    path = tmp_path / "img.ome.zarr"
    reference = ramp((2, 9, 20, 22))
    writer = create_ome_zarr(
        path,
        shape=reference.shape,
        dtype="uint16",
        chunks=(1, 4, 8, 8),
        axes="czyx",
        voxel_size=(1.0, 2.0, 0.5, 0.5),
        unit="micrometer",
        ngff_version=version,
        compressor=compressor,
        levels=3,
        channel_names=["dapi", "gfp"],
    )
    writer.write_region((0, 0, 0, 0), reference)
    writer.build_pyramid()
    writer.finish()
    validate_image(path, version)
    levels = read_with_ome_zarr(path)
    np.testing.assert_array_equal(levels[0], reference)
    expected1 = np.rint(brute_force_mean(reference.astype(np.float64), (1, 2, 2, 2)))
    np.testing.assert_array_equal(levels[1], expected1.astype(np.uint16))
    assert levels[2].shape == (2, 3, 5, 6)
    volume = open_volume(path, level=1)
    assert volume.voxel_size == (1.0, 4.0, 1.0, 1.0)
    assert volume.unit == "micrometer"
    zarr_format = zarr.open_group(str(path), mode="r").metadata.zarr_format
    assert zarr_format == (2 if version == "0.4" else 3)


def test_nearest_pyramid_keeps_label_values(tmp_path: Path) -> None:
    labels = (ramp((10, 12, 14), "uint8") % 3).astype(np.uint8)
    writer = create_ome_zarr(
        tmp_path / "labels.ome.zarr",
        shape=labels.shape,
        dtype="uint8",
        chunks=(4, 4, 4),
        axes="zyx",
        levels=2,
        downscale={"y": 2, "x": 2},
    )
    writer.write_region((0, 0, 0), labels)
    writer.build_pyramid("nearest")
    writer.finish()
    level1 = open_volume(tmp_path / "labels.ome.zarr", level=1)
    np.testing.assert_array_equal(level1[:], labels[:, ::2, ::2])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_concurrent_chunk_aligned_writers(tmp_path: Path, version: str) -> None:
    reference = ramp((24, 16, 16), "float32")
    writer = create_ome_zarr(
        tmp_path / "shared.ome.zarr",
        shape=reference.shape,
        dtype="float32",
        chunks=(4, 8, 8),
        axes="zyx",
        ngff_version=version,
    )
    # Spawned workers import the mapped function by name: use the library's own method, as
    # pytest's importlib mode gives this module a name other processes cannot import.
    jobs = [(writer, (z, 0, 0), reference[z : z + 4]) for z in range(0, 24, 4)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.starmap(OmeZarrWriter.write_region, jobs, chunksize=1)
    writer.finish()
    np.testing.assert_array_equal(open_volume(tmp_path / "shared.ome.zarr")[:], reference)


def test_failed_creation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voxflow_io._write as write_module

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(write_module, "write_image_group", broken)
    with pytest.raises(OSError, match="disk full"):
        create_ome_zarr(
            tmp_path / "x.ome.zarr", shape=(4, 4), dtype="uint8", chunks=(2, 2), axes="yx"
        )
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_whole_store(tmp_path: Path) -> None:
    path = tmp_path / "x.ome.zarr"
    with create_ome_zarr(path, shape=(8, 8), dtype="uint8", chunks=(4, 4), axes="yx") as writer:
        writer.write_region((0, 0), np.ones((8, 8), np.uint8))
    create_ome_zarr(
        path, shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx", overwrite=True
    ).finish()
    assert open_volume(path).shape == (4, 4)
    np.testing.assert_array_equal(open_volume(path)[:], 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ome.zarr"]
