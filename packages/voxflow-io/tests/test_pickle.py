"""Volumes cross process boundaries (spawn) and reopen their handles there."""

from __future__ import annotations

import multiprocessing
import operator
import pickle
from pathlib import Path

import numpy as np
import tifffile
import zarr

from voxflow_io import open_volume

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
