"""Volumes opened before a PyTorch DataLoader starts keep working in its workers: a local
OME-Zarr image, a tiled TIFF and an OME-Zarr image on a moto S3 server, each a map-style dataset
(``volume[window]``) whose sampler yields the windows; every window is compared with numpy, and
the parent reads correctly after the workers ran. A DataLoader timeout turns a hung worker into
a failure.

* ``fork``: volumes opened (not read) before the fork read in every worker. tensorstore, the
  zarr read path, cannot run in a process forked after it ran (it would abort the worker): once
  the parent has read zarr data, a forked worker's zarr read raises ForkedProcessError naming
  the remedy, and TIFF volumes keep working. The fork scenario runs in a fresh interpreter,
  since this test process has used tensorstore already.
* ``spawn`` and ``forkserver``: volumes read in the parent before the loader starts work.

torch is not a dependency of voxflow-io: these tests run where it is installed.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from voxflow_io import Volume, create_ome_zarr, open_volume

from .conftest import ramp
from .remote_servers import S3_KEY, S3_SECRET, S3Server

torch = pytest.importorskip("torch")

SHAPE = (16, 40, 52)
CHUNKS = (8, 16, 16)
#: Seconds a DataLoader may wait for one batch before it raises (instead of hanging).
TIMEOUT = 60
# spawn and forkserver workers import torch: over 20 s here, so they run in the README command
CONTEXTS = [
    pytest.param("spawn", marks=pytest.mark.slow),
    pytest.param("forkserver", marks=pytest.mark.slow),
]
#: The fork scenario, run by a fresh interpreter: argv = folder, S3 endpoint, URL.
FORK_SCENARIO = """
import json
import sys
from pathlib import Path

import numpy as np
import torch

from voxflow_io import ForkedProcessError, open_volume

folder, endpoint, url = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
options = {"endpoint_url": endpoint, "key": sys.argv[4], "secret": sys.argv[5]}
reference = np.load(folder / "reference.npy")
volumes = {
    "ome-zarr": open_volume(folder / "image.ome.zarr"),
    "tiff": open_volume(folder / "stack.tif"),
    "s3": open_volume(url, storage_options=options),
}
volumes["tiff"].read((0, 0, 0), (1, 1, 1))  # the parent's TIFF handle is open before the fork
windows = [tuple(slice(*bounds) for bounds in w) for w in json.load(sys.stdin)]


def loader(volumes):
    return torch.utils.data.DataLoader(
        torch.utils.data.StackDataset(**volumes),
        batch_size=None,
        sampler=windows,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=60,
    )


for window, batch in zip(windows, loader(volumes), strict=True):
    for name, tensor in batch.items():
        np.testing.assert_array_equal(tensor.numpy(), reference[window], err_msg=name)
for name, volume in volumes.items():  # the parent reads after its workers did
    np.testing.assert_array_equal(volume[2:9, 3:31, 4:44], reference[2:9, 3:31, 4:44])
for name in ("ome-zarr", "s3"):
    try:
        list(loader({name: volumes[name]}))
    except ForkedProcessError as error:
        assert "multiprocessing_context='spawn'" in str(error), error
    else:
        raise AssertionError(f"{name}: a forked worker read zarr after the parent did")
np.testing.assert_array_equal(next(iter(loader({"tiff": volumes["tiff"]})))["tiff"].numpy(),
                              reference[windows[0]])
print("fork scenario passed")
"""


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
def test_volumes_read_in_the_parent_read_in_spawned_workers(
    volumes: dict[str, Volume], reference: np.ndarray, context: str
) -> None:
    for volume in volumes.values():
        volume.read((0, 0, 0), (1, 1, 1))  # the parent's readers are open before the loader
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


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_volumes_opened_before_a_fork_read_in_its_workers(
    volumes: dict[str, Volume], reference: np.ndarray, s3: S3Server
) -> None:
    folder = volumes["ome-zarr"].path.parent  # type: ignore[union-attr]
    np.save(folder / "reference.npy", reference)
    windows = json.dumps([[[s.start, s.stop] for s in window] for window in _windows()])
    credentials = (str(volumes["s3"].path), S3_KEY, S3_SECRET)
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCENARIO, str(folder), s3.endpoint, *credentials],
        input=windows,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fork scenario passed" in result.stdout
