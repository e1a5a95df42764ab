"""``open_volume`` on objects the caller already opened: zarr-python arrays and groups (local,
in memory, on a moto S3 server) and tensorstore handles. Values are checked against the numpy
arrays the stores were written from; pickled volumes reopen from the store's location."""

from __future__ import annotations

import multiprocessing
import operator
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore, MemoryStore

from voxflow_io import (
    ForkedProcessError,
    IncompleteStoreError,
    LevelOutOfRangeError,
    MetadataError,
    ParameterError,
    UnsupportedFormatError,
    Volume,
    VolumeNotFoundError,
    create_ome_zarr,
    open_volume,
)
from voxflow_io._remote import RemoteLocation
from voxflow_io._tensorstore import TensorStoreReader

from .conftest import ramp
from .remote_servers import S3_SECRET, S3Server

SHAPE = (12, 30, 41)
CHUNKS = (5, 8, 16)
WINDOW = (slice(3, 11), slice(7, 29), slice(5, 40))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """(12, 30, 41) uint16, not a multiple of the (5, 8, 16) chunks on any axis."""
    return ramp(SHAPE)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


def _check(volume: Volume, reference: np.ndarray, level_data: np.ndarray | None = None) -> None:
    """Windows and the whole array equal numpy, also after a pickle round trip."""
    data = reference if level_data is None else level_data
    np.testing.assert_array_equal(volume[WINDOW], data[WINDOW])
    np.testing.assert_array_equal(np.asarray(volume), data)
    clone = pickle.loads(pickle.dumps(volume))
    assert (clone.shape, clone.dtype, clone.axes) == (volume.shape, volume.dtype, volume.axes)
    np.testing.assert_array_equal(clone[WINDOW], data[WINDOW])


def _ome_image(path: Path | str, reference: np.ndarray, **kwargs: object) -> None:
    with create_ome_zarr(
        path,
        shape=SHAPE,
        dtype="uint16",
        chunks=CHUNKS,
        axes="zyx",
        voxel_size=(2.0, 0.5, 0.25),
        unit="micrometer",
        **kwargs,  # type: ignore[arg-type]
    ) as writer:
        writer.write_region((0, 0, 0), reference)


# -- zarr-python, local ----------------------------------------------------------------------
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_local_zarr_array_object(tmp_path: Path, reference: np.ndarray, zarr_format: int) -> None:
    path = tmp_path / "array.zarr"
    zarr.create_array(
        str(path), data=reference, chunks=CHUNKS, zarr_format=zarr_format
    )  # no dimension names: the axes come from the argument or the defaults
    array = zarr.open_array(str(path), mode="r")
    volume = open_volume(array)
    assert (volume.shape, volume.dtype, volume.axes, volume.chunks) == (
        SHAPE,
        np.dtype("uint16"),
        "zyx",
        CHUNKS,
    )
    assert volume.path == path
    assert isinstance(volume._reader, TensorStoreReader)  # the one zarr read path
    _check(volume, reference)
    assert open_volume(array, axes="cyx").axes == "cyx"
    with pytest.raises(LevelOutOfRangeError, match="only level 0"):
        open_volume(array, level=1)
    with pytest.raises(UnsupportedFormatError, match="applies to zarr groups only"):
        open_volume(array, key="0")


def test_zarr_v3_dimension_names_give_the_axes(tmp_path: Path, reference: np.ndarray) -> None:
    array = zarr.create_array(
        str(tmp_path / "named.zarr"), data=reference, chunks=CHUNKS, dimension_names=["c", "y", "x"]
    )
    assert open_volume(array).axes == "cyx"
    with pytest.raises(MetadataError, match="contradicts the stored dimension names"):
        open_volume(array, axes="zyx")


@pytest.mark.parametrize("ngff_version", ["0.4", "0.5"])
def test_ome_zarr_group_object(tmp_path: Path, reference: np.ndarray, ngff_version: str) -> None:
    path = tmp_path / "image.ome.zarr"
    _ome_image(path, reference, ngff_version=ngff_version, levels=2)
    group = zarr.open_group(str(path), mode="r")
    volume = open_volume(group)
    assert volume.axes == "zyx"
    assert volume.voxel_size == (2.0, 0.5, 0.25)
    assert volume.unit == "micrometer"
    assert volume.path == path
    _check(volume, reference)
    level1 = open_volume(group, level=1)
    assert level1.shape == tuple(-(-n // 2) for n in SHAPE)
    np.testing.assert_array_equal(
        np.asarray(pickle.loads(pickle.dumps(level1))),
        group["1"][:],  # zarr's own read
    )
    with pytest.raises(MetadataError, match="contradicts the OME-NGFF axes"):
        open_volume(group, axes="cyx")


def test_group_object_with_key(tmp_path: Path, reference: np.ndarray) -> None:
    root = zarr.open_group(str(tmp_path / "experiment.zarr"), mode="w")
    root.create_group("raw").create_array("volume", data=reference, chunks=CHUNKS)
    root.create_group("images")
    _ome_image(tmp_path / "experiment.zarr" / "images" / "a.ome.zarr", reference)
    # The key is relative to the group passed, also below the store's root.
    raw = zarr.open_group(str(tmp_path / "experiment.zarr"), path="raw", mode="r")
    volume = open_volume(raw, key="volume")
    assert volume.path == tmp_path / "experiment.zarr"
    _check(volume, reference)
    image = open_volume(root, key="images/a.ome.zarr")
    assert image.voxel_size == (2.0, 0.5, 0.25)
    _check(image, reference)
    with pytest.raises(VolumeNotFoundError, match=re.escape("'missing'")):
        open_volume(raw, key="missing")
    with pytest.raises(MetadataError, match="without OME-NGFF multiscales"):
        open_volume(root)


def test_unfinished_image_object_is_refused(tmp_path: Path, reference: np.ndarray) -> None:
    path = tmp_path / "unfinished.ome.zarr"
    create_ome_zarr(path, shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx")
    group = zarr.open_group(str(path), mode="r")
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_volume(group)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_volume(group["0"])  # the level array inside the marked image
    assert open_volume(group, allow_incomplete=True).shape == SHAPE


# -- zarr-python, memory and S3 ----------------------------------------------------------------
def test_memory_store_is_refused_naming_the_store(reference: np.ndarray) -> None:
    """tensorstore, the zarr read path, cannot see a zarr-python MemoryStore."""
    array = zarr.create_array(MemoryStore(), data=reference, chunks=CHUNKS, name="a/b")
    with pytest.raises(UnsupportedFormatError, match=r"zarr Array in a MemoryStore cannot be read"):
        open_volume(array)
    group = zarr.open_group(array.store, mode="r")
    with pytest.raises(UnsupportedFormatError, match=r"a/b: a zarr Array in a MemoryStore"):
        open_volume(group, key="a/b")


def test_s3_zarr_objects(s3: S3Server, reference: np.ndarray) -> None:
    url = s3.url("objects.ome.zarr")
    _ome_image(url, reference, storage_options=s3.storage_options)
    # Stores made by the user with zarr-python and fsspec alone.
    store = FsspecStore.from_url(url, storage_options=s3.storage_options, read_only=True)
    group = zarr.open_group(store, mode="r")
    volume = open_volume(group)
    assert isinstance(volume.path, RemoteLocation)
    assert str(volume.path) == url
    assert volume.voxel_size == (2.0, 0.5, 0.25)
    assert S3_SECRET not in repr(volume)
    _check(volume, reference)  # the pickled copy reopens from the URL and storage_options

    array = zarr.open_array(store, path="0", mode="r")
    volume = open_volume(array)
    assert str(volume.path) == url
    assert volume.axes == "zyx"
    _check(volume, reference)
    with pytest.raises(ParameterError, match="storage_options apply to URLs only"):
        open_volume(array, storage_options=s3.storage_options)


# -- tensorstore -----------------------------------------------------------------------------
def test_tensorstore_handle(tmp_path: Path, reference: np.ndarray) -> None:
    ts = pytest.importorskip("tensorstore")
    path = tmp_path / "ts.zarr"
    zarr.create_array(str(path), data=reference, chunks=CHUNKS, dimension_names=["z", "y", "x"])
    handle = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}).result()
    volume = open_volume(handle)
    assert (volume.shape, volume.dtype, volume.axes, volume.chunks) == (
        SHAPE,
        np.dtype("uint16"),
        "zyx",
        CHUNKS,
    )
    assert volume.path == path
    _check(volume, reference)  # the pickled copy reopens from the spec
    with pytest.raises(MetadataError, match="contradicts the dimension labels"):
        open_volume(handle, axes="cyx")
    # A slice of a handle (non-zero origin) reads from its origin as index 0.
    part = open_volume(handle[2:9, 5:25, 1:40])
    np.testing.assert_array_equal(np.asarray(part), reference[2:9, 5:25, 1:40])
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(part))[1:3, 2:4, 3:5], reference[3:5, 7:9, 4:6]
    )
    # No dimension labels (zarr v2): the axes argument or the defaults.
    v2 = tmp_path / "ts-v2.zarr"
    zarr.create_array(str(v2), data=reference, chunks=CHUNKS, zarr_format=2)
    handle2 = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(v2)}}).result()
    assert open_volume(handle2).axes == "zyx"
    assert open_volume(handle2, axes="cyx").axes == "cyx"
    with pytest.raises(UnsupportedFormatError, match="applies to zarr groups only"):
        open_volume(handle2, key="0")


def test_tensorstore_in_memory_opens_but_refuses_pickling(reference: np.ndarray) -> None:
    ts = pytest.importorskip("tensorstore")
    handle = ts.open(
        {
            "driver": "zarr3",
            "kvstore": {"driver": "memory"},
            "metadata": {
                "shape": list(SHAPE),
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNKS)}},
                "data_type": "uint16",
            },
        },
        create=True,
    ).result()
    handle.write(reference).result()
    volume = open_volume(handle)
    np.testing.assert_array_equal(volume[WINDOW], reference[WINDOW])
    with pytest.raises(
        ParameterError, match="TensorStore over an in-memory store cannot be pickled"
    ):
        pickle.dumps(volume)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_tensorstore_volume_in_a_forked_process_is_refused_not_aborted(
    tmp_path: Path, reference: np.ndarray
) -> None:
    """tensorstore aborts a forked process that uses it; the volume says why and what to do."""
    ts = pytest.importorskip("tensorstore")
    path = tmp_path / "fork.zarr"
    zarr.create_array(str(path), data=reference, chunks=CHUNKS)
    handle = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}).result()
    volume = open_volume(handle)
    volume.read((0, 0, 0), (1, 1, 1))
    read = operator.methodcaller("read", (1, 2, 3), (4, 5, 6))
    with (
        multiprocessing.get_context("fork").Pool(1) as pool,
        pytest.raises(ForkedProcessError, match="multiprocessing_context='spawn'"),
    ):
        pool.map_async(read, [volume]).get(timeout=60)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        (window,) = pool.map_async(read, [volume]).get(timeout=120)
    np.testing.assert_array_equal(window, reference[1:5, 2:7, 3:9])


def test_other_objects_are_refused_with_their_type() -> None:
    with pytest.raises(ParameterError, match=r"found numpy\.ndarray"):
        open_volume(np.zeros((2, 2)))  # type: ignore[arg-type]
