"""Volumes cross process boundaries (spawn) and reopen their handles there."""

from __future__ import annotations

import multiprocessing
import operator
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from voxflow_io import Volume, open_volume

from .conftest import ramp


def test_volumes_read_in_spawned_workers(tmp_path: Path) -> None:
    reference = ramp((8, 12, 14))
    tifffile.imwrite(tmp_path / "a.tif", reference)
    tifffile.imwrite(tmp_path / "b.tif", reference, compression="zlib", tile=(16, 16))
    zarr.create_array(str(tmp_path / "c.zarr"), data=reference, chunks=(4, 4, 4))
    np.save(tmp_path / "d.npy", reference)
    volumes = [open_volume(tmp_path / name) for name in ("a.tif", "b.tif", "c.zarr", "d.npy")]
    for volume in volumes:
        volume.read((0, 0, 0), (1, 1, 1))  # open handles before pickling
        assert len(pickle.dumps(volume)) < 2000
    # The mapped function comes from the standard library, so that the spawned workers import
    # nothing from this test module: only voxflow_io has to travel.
    read_window = operator.methodcaller("read", (1, 2, 3), (4, 5, 6))
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.map(read_window, volumes * 2, chunksize=1)
    for window in results:
        np.testing.assert_array_equal(window, reference[1:5, 2:7, 3:9])


def _read_inherited(volume: Volume, starts: list, queue: multiprocessing.Queue) -> None:
    for start in starts:
        queue.put((start, volume.read(start, (8, 32, 32))))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_forked_workers_reopen_instead_of_sharing_the_parents_handle(tmp_path: Path) -> None:
    reference = ramp((32, 64, 64))
    tifffile.imwrite(tmp_path / "z.tif", reference, compression="zlib")
    volume = open_volume(tmp_path / "z.tif")
    volume.read((0, 0, 0), (1, 1, 1))  # the parent holds an open TiffFile with a file offset
    starts = [((i * 7) % 24, (i * 13) % 32, (i * 5) % 32) for i in range(64)]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    # Process arguments are inherited through fork, not pickled: the children get the parent's
    # open reader, as DataLoader workers do.
    workers = [
        context.Process(target=_read_inherited, args=(volume, starts[i::2], queue))
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in starts]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    for (z, y, x), window in results:
        np.testing.assert_array_equal(window, reference[z : z + 8, y : y + 32, x : x + 32])
    np.testing.assert_array_equal(volume.read((1, 2, 3), (4, 5, 6)), reference[1:5, 2:7, 3:9])
