"""Volumes opened before a PyTorch DataLoader starts keep working in its workers, under both
``fork`` and ``spawn``: a local OME-Zarr image, a TIFF stack and an OME-Zarr image on a moto S3
server. Each volume is a map-style dataset (``volume[window]``) and the sampler yields the
windows; every window is compared with numpy, and the parent reads correctly after the workers
ran. A DataLoader timeout turns a hung worker into a failure.

torch is not a dependency of voxflow-io: these tests run where it is installed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from voxflow_io import Volume, create_ome_zarr, open_volume

from .conftest import ramp
from .remote_servers import S3Server

torch = pytest.importorskip("torch")

SHAPE = (16, 40, 52)
CHUNKS = (8, 16, 16)
#: Seconds a DataLoader may wait for one batch before it raises (instead of hanging).
TIMEOUT = 60
CONTEXTS = [
    pytest.param(
        "fork",
        marks=pytest.mark.skipif(
            "fork" not in multiprocessing.get_all_start_methods(), reason="no fork"
        ),
    ),
    # spawn imports torch in each worker: over 20 s here, so it runs once, in the README command
    pytest.param("spawn", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """(16, 40, 52) uint16, not a multiple of the (8, 16, 16) chunks on y and x."""
    return ramp(SHAPE)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


def _windows() -> list[tuple[slice, slice, slice]]:
    """24 windows of (5, 11, 13) voxels spread over the volume, aligned and not."""
    return [
        (
            slice(z, z + 5),
            slice(y, y + 11),
            slice(x, x + 13),
        )
        for z, y, x in (((i * 5) % 12, (i * 7) % 30, (i * 11) % 40) for i in range(24))
    ]


def _ome_zarr(path: Path | str, reference: np.ndarray, **kwargs: object) -> None:
    with create_ome_zarr(
        path,
        shape=SHAPE,
        dtype="uint16",
        chunks=CHUNKS,
        axes="zyx",
        **kwargs,  # type: ignore[arg-type]
    ) as writer:
        writer.write_region((0, 0, 0), reference)


@pytest.fixture(scope="module")
def volumes(
    tmp_path_factory: pytest.TempPathFactory, reference: np.ndarray, s3: S3Server
) -> dict[str, Volume]:
    """The same data as a local OME-Zarr image, a tiled zlib TIFF and an OME-Zarr image on S3."""
    folder = tmp_path_factory.mktemp("workers")
    _ome_zarr(folder / "image.ome.zarr", reference)
    tifffile.imwrite(folder / "stack.tif", reference, compression="zlib", tile=(16, 16))
    url = s3.url("workers.ome.zarr")
    _ome_zarr(url, reference, storage_options=s3.storage_options)
    return {
        "ome-zarr": open_volume(folder / "image.ome.zarr"),
        "tiff": open_volume(folder / "stack.tif"),
        "s3": open_volume(url, storage_options=s3.storage_options),
    }


@pytest.mark.parametrize("context", CONTEXTS)
def test_volumes_opened_before_the_dataloader_read_in_its_workers(
    volumes: dict[str, Volume], reference: np.ndarray, context: str
) -> None:
    for volume in volumes.values():
        volume.read((0, 0, 0), (1, 1, 1))  # the parent's readers are open before the fork
    windows = _windows()
    # One loader over the three volumes (one dataset per source, indexed by the same window),
    # so that the spawned workers import torch once for all of them.
    loader = torch.utils.data.DataLoader(
        torch.utils.data.StackDataset(**volumes),
        batch_size=None,
        sampler=windows,
        num_workers=2,
        multiprocessing_context=context,
        timeout=TIMEOUT,
    )
    results = list(loader)
    assert len(results) == len(windows)
    for window, batch in zip(windows, results, strict=True):
        assert set(batch) == set(volumes)
        for name, tensor in batch.items():
            np.testing.assert_array_equal(tensor.numpy(), reference[window], err_msg=name)
    # Nothing the workers did disturbed the parent's readers.
    for name, volume in volumes.items():
        np.testing.assert_array_equal(
            volume[3:14, 5:37, 2:50], reference[3:14, 5:37, 2:50], err_msg=name
        )
