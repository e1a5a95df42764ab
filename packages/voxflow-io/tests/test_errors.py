"""Bad input fails loudly, naming the file and what was wrong: never a silent fix."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import voxflow_io
from voxflow_io import (
    CorruptVolumeError,
    DatasetLayoutError,
    LevelOutOfRangeError,
    MetadataError,
    StoreExistsError,
    UnsupportedFormatError,
    VolumeNotFoundError,
    WindowError,
    create_ome_zarr,
    discover_dataset,
    open_volume,
)

from .test_discover import make_layout


def test_every_error_is_a_voxflow_io_error() -> None:
    for name in voxflow_io.__all__:
        obj = getattr(voxflow_io, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, voxflow_io.VoxflowIOError)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VolumeNotFoundError, match=r"nope\.zarr: no such file"):
        open_volume(tmp_path / "nope.zarr")


def test_unknown_file_format(tmp_path: Path) -> None:
    (tmp_path / "scan.xyz").write_bytes(b"123")
    with pytest.raises(UnsupportedFormatError, match=r"scan\.xyz: unknown volume format '\.xyz'"):
        open_volume(tmp_path / "scan.xyz")


def test_folder_without_volume(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UnsupportedFormatError, match="no zarr metadata and no slice images"):
        open_volume(tmp_path)


def test_truncated_tiff(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.zeros((10, 64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:40000])
    with pytest.raises(CorruptVolumeError, match=r"cut\.tif: truncated"):
        open_volume(path)


def test_truncated_compressed_tiff(tmp_path: Path) -> None:
    path = tmp_path / "cutz.tif"
    tifffile.imwrite(
        path, np.random.default_rng(0).integers(0, 9, (10, 64, 64), np.uint16), compression="zlib"
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(CorruptVolumeError, match=r"cutz\.tif"):
        open_volume(path)[:]


def test_garbage_tiff(tmp_path: Path) -> None:
    (tmp_path / "bad.tif").write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(CorruptVolumeError, match=r"bad\.tif: not a readable TIFF"):
        open_volume(tmp_path / "bad.tif")


def test_corrupt_zarr_chunk_names_the_chunk(tmp_path: Path) -> None:
    path = tmp_path / "a.zarr"
    zarr.create_array(str(path), data=np.ones((8, 8), np.uint16), chunks=(4, 4))
    (path / "c" / "1" / "0").write_bytes(b"\x00garbage")
    volume = open_volume(path)
    np.testing.assert_array_equal(volume[:4], 1)  # other chunks still read
    with pytest.raises(CorruptVolumeError, match=r"a\.zarr/c/1/0"):
        volume[4:, :4]


def test_zarr_chunk_that_decodes_to_the_wrong_size(tmp_path: Path) -> None:
    import numcodecs

    path = tmp_path / "a.zarr"
    zarr.create_array(str(path), data=np.ones((8, 8), np.uint16), chunks=(4, 4))
    (path / "c" / "0" / "0").write_bytes(numcodecs.Zstd().encode(np.ones(5, np.uint16)))
    with pytest.raises(CorruptVolumeError, match=r"c/0/0"):
        open_volume(path)[:2, :2]


def test_slice_folder_with_mixed_shapes(tmp_path: Path) -> None:
    for z in range(3):
        tifffile.imwrite(tmp_path / f"{z}.tif", np.zeros((8, 8 if z != 2 else 9), np.uint8))
    with pytest.raises(
        MetadataError, match=r"slice 2\.tif has shape \(8, 9\) uint8, but 0\.tif has \(8, 8\)"
    ):
        open_volume(tmp_path)


def test_slice_folder_with_mixed_dtypes(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "0.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "1.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(MetadataError, match=r"slice 1\.tif has shape \(8, 8\) uint16"):
        open_volume(tmp_path)


def test_axes_that_do_not_match_rank(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(MetadataError, match=r"axes 'zyx' name 3 dimensions but the array has 2"):
        open_volume(tmp_path / "v.npy", axes="zyx")


def test_axes_with_unknown_or_repeated_letters(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(MetadataError, match=r"unknown letters \['q'\]"):
        open_volume(tmp_path / "v.npy", axes="qyx")
    with pytest.raises(MetadataError, match="more than once"):
        open_volume(tmp_path / "v.npy", axes="yyx")


def test_axes_contradicting_ome_metadata(tmp_path: Path) -> None:
    create_ome_zarr(
        tmp_path / "i.ome.zarr", shape=(4, 4, 4), dtype="uint8", chunks=(4, 4, 4), axes="zyx"
    ).finish()
    with pytest.raises(MetadataError, match="contradicts the OME-NGFF axes 'zyx'"):
        open_volume(tmp_path / "i.ome.zarr", axes="cyx")


def test_pyramid_level_out_of_range(tmp_path: Path) -> None:
    create_ome_zarr(
        tmp_path / "i.ome.zarr", shape=(8, 8), dtype="uint8", chunks=(4, 4), axes="yx", levels=2
    ).finish()
    with pytest.raises(
        LevelOutOfRangeError, match=r"level 2 requested but the image has levels 0\.\.1"
    ):
        open_volume(tmp_path / "i.ome.zarr", level=2)


def test_malformed_ngff_metadata(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="w")
    group.create_array("0", shape=(4, 4), dtype="uint8")
    group.attrs["multiscales"] = [
        {"version": "0.4", "axes": [{"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}
    ]
    with pytest.raises(
        MetadataError, match=r"datasets\.0\.coordinateTransformations: Field required"
    ):
        open_volume(tmp_path / "m.zarr")


def test_group_without_key(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(4, 4), dtype="uint8")
    with pytest.raises(MetadataError, match=r"pass key= naming one of its members \['raw'\]"):
        open_volume(tmp_path / "g.zarr")
    with pytest.raises(VolumeNotFoundError, match="key 'labels'"):
        open_volume(tmp_path / "g.zarr", key="labels")


def test_window_outside_volume_is_an_error_not_a_clip(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((4, 5, 6), np.uint8))
    volume = open_volume(tmp_path / "v.npy")
    with pytest.raises(WindowError, match=r"along axis 2 \('x'\).*found start 3, size 4"):
        volume.read((0, 0, 3), (1, 1, 4))
    with pytest.raises(WindowError, match="must be 3 integers"):
        volume.read((0, 0), (1, 1))
    with pytest.raises(WindowError, match="reaches outside axis 1"):
        volume[:, 2:9]
    with pytest.raises(WindowError, match="index 4 is outside axis 0"):
        volume[4]
    with pytest.raises(WindowError, match="only basic indexing"):
        volume[[0, 1]]


def test_existing_store_needs_overwrite(tmp_path: Path) -> None:
    create_ome_zarr(tmp_path / "i.ome.zarr", shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx")
    with pytest.raises(
        StoreExistsError, match=r"i\.ome\.zarr: already exists; pass overwrite=True"
    ):
        create_ome_zarr(
            tmp_path / "i.ome.zarr", shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx"
        )


def test_misaligned_or_mistyped_region_write(tmp_path: Path) -> None:
    writer = create_ome_zarr(
        tmp_path / "i.ome.zarr", shape=(10, 10), dtype="uint8", chunks=(4, 4), axes="yx"
    )
    with pytest.raises(
        WindowError,
        match=r"region start \(2, 0\) size \(4, 4\) is not aligned to the chunks \(4, 4\) on "
        r"axis 0 \('y'\): \[2, 6\) must start and end on multiples of 4",
    ):
        writer.write_region((2, 0), np.zeros((4, 4), np.uint8))
    writer.write_region((8, 8), np.zeros((2, 2), np.uint8))  # ends at the array edge: fine
    with pytest.raises(MetadataError, match="data dtype float32, expected uint8"):
        writer.write_region((0, 0), np.zeros((4, 4), np.float32))


def test_bad_voxel_size_and_axis_order(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="finite and positive"):
        create_ome_zarr(
            tmp_path / "a",
            shape=(4, 4),
            dtype="uint8",
            chunks=(4, 4),
            axes="yx",
            voxel_size=(1.0, float("nan")),
        )
    with pytest.raises(MetadataError, match="ordered t, c, z, y, x"):
        create_ome_zarr(tmp_path / "b", shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="xy")


def test_volume_changed_on_disk_after_pickling(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((4, 4), np.uint8))
    volume = pickle.loads(pickle.dumps(open_volume(tmp_path / "v.npy")))
    np.save(tmp_path / "v.npy", np.zeros((5, 4), np.uint8))
    with pytest.raises(
        MetadataError, match=r"changed since it was opened: expected shape \(4, 4\)"
    ):
        volume[0]


def test_discovery_label_without_image(tmp_path: Path) -> None:
    make_layout(
        tmp_path, {"images/a.tif": (4, 4), "labels/a_ink.tif": (4, 4), "labels/b_ink.tif": (4, 4)}
    )
    with pytest.raises(DatasetLayoutError, match=r"b_ink\.tif: label has no image"):
        discover_dataset(tmp_path)


def test_discovery_shape_mismatch(tmp_path: Path) -> None:
    make_layout(tmp_path, {"images/a.tif": (4, 4), "labels/a_ink.tif": (4, 5)})
    with pytest.raises(
        DatasetLayoutError, match=r"a_ink\.tif: shape .* does not match image a\.tif"
    ):
        discover_dataset(tmp_path)


def test_discovery_missing_target_and_orphan_mask(tmp_path: Path) -> None:
    make_layout(
        tmp_path,
        {
            "images/a.tif": (4, 4),
            "images/b.tif": (4, 4),
            "labels/a_ink.tif": (4, 4),
            "labels/a_fiber.tif": (4, 4),
            "labels/b_ink.tif": (4, 4),
        },
    )
    with pytest.raises(
        DatasetLayoutError, match=r"b\.tif: has labels for targets \['ink'\].*missing \['fiber'\]"
    ):
        discover_dataset(tmp_path)
    with pytest.raises(
        DatasetLayoutError, match="target 'fiber' is not one of the configured targets"
    ):
        discover_dataset(tmp_path, targets=["ink"])
    make_layout(tmp_path, {"labels/b_fiber.tif": (4, 4), "masks/c.tif": (4, 4)})
    with pytest.raises(DatasetLayoutError, match=r"c\.tif: mask has no image"):
        discover_dataset(tmp_path)
