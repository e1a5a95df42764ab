"""Killed or unfinished writers never leave a store that reads as complete, and a retry after a
killed creation leaves no stale temporaries behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from voxflow_io import (
    FinishedStoreError,
    IncompleteStoreError,
    MetadataError,
    OmeZarrWriter,
    VolumeNotFoundError,
    create_ome_zarr,
    create_plate,
    open_plate,
    open_volume,
)

from .test_write import validate_image

INCOMPLETE = r"the OME-Zarr image is marked incomplete .* pass allow_incomplete=True"


def run_and_kill(script: str) -> None:
    """Run ``script`` in a fresh interpreter that ends with ``os._exit`` (no cleanup runs, as
    after SIGKILL), and check it got that far."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 9, done.stderr


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_unfinished_image_is_refused_until_finish(tmp_path: Path, version: str) -> None:
    path = tmp_path / "pred.ome.zarr"
    writer = create_ome_zarr(
        path, shape=(8, 8), dtype="uint8", chunks=(4, 4), axes="yx", ngff_version=version
    )
    writer.write_region((0, 0), np.full((4, 8), 7, np.uint8))
    with pytest.raises(IncompleteStoreError, match=rf"pred\.ome\.zarr: {INCOMPLETE}"):
        open_volume(path)
    # The level array inside the image is refused too, by path or by key.
    with pytest.raises(
        IncompleteStoreError, match=rf"pred\.ome\.zarr/0 \(inside .*\): {INCOMPLETE}"
    ):
        open_volume(path / "0")
    with pytest.raises(IncompleteStoreError, match=INCOMPLETE):
        open_volume(path, key="0")
    partial = open_volume(path, allow_incomplete=True)[:]  # opt-in, e.g. to resume
    assert (partial[:4] == 7).all()
    assert (partial[4:] == 0).all()
    writer.finish()
    validate_image(path, version)  # a finished store is valid NGFF, without the marker
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    assert "voxflow_io" not in attrs
    np.testing.assert_array_equal(open_volume(path)[:4], 7)


def test_finished_image_is_not_written_again(tmp_path: Path) -> None:
    path = tmp_path / "i.ome.zarr"
    writer = create_ome_zarr(path, shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx")
    writer.finish()
    with pytest.raises(FinishedStoreError, match=r"finish\(\) was called; the image is complete"):
        writer.write_region((0, 0), np.ones((4, 4), np.uint8))
    with pytest.raises(FinishedStoreError, match=r"finish\(\) was called"):
        writer.finish()
    with pytest.raises(
        FinishedStoreError, match=r"i\.ome\.zarr: the image is not being written .*overwrite=True"
    ):
        OmeZarrWriter(path)


def test_with_block_finishes_only_on_success(tmp_path: Path) -> None:
    kwargs = {"shape": (4, 4), "dtype": "uint8", "chunks": (4, 4), "axes": "yx"}
    with create_ome_zarr(tmp_path / "ok.ome.zarr", **kwargs) as writer:
        writer.write_region((0, 0), np.ones((4, 4), np.uint8))
    np.testing.assert_array_equal(open_volume(tmp_path / "ok.ome.zarr")[:], 1)
    with (
        pytest.raises(RuntimeError, match="prediction failed"),
        create_ome_zarr(tmp_path / "bad.ome.zarr", **kwargs),
    ):
        raise RuntimeError("prediction failed")
    with pytest.raises(IncompleteStoreError, match=INCOMPLETE):
        open_volume(tmp_path / "bad.ome.zarr")


def test_killed_write_region_leaves_a_store_marked_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "killed.ome.zarr"
    run_and_kill(
        f"""
import os, numpy as np
from voxflow_io import create_ome_zarr
writer = create_ome_zarr({str(path)!r}, shape=(8, 8), dtype="uint8", chunks=(4, 4), axes="yx",
                         levels=2)
writer.write_region((0, 0), np.ones((4, 8), np.uint8))
os._exit(9)  # killed before the second region, the pyramid and finish()
"""
    )
    with pytest.raises(IncompleteStoreError, match=rf"killed\.ome\.zarr: {INCOMPLETE}"):
        open_volume(path)
    with pytest.raises(IncompleteStoreError, match=INCOMPLETE):
        open_volume(path, level=1)
    # Resume: reopen the writer, write what is missing, finish.
    writer = OmeZarrWriter(path)
    writer.write_region((4, 0), np.ones((4, 8), np.uint8))
    writer.build_pyramid()
    writer.finish()
    np.testing.assert_array_equal(open_volume(path, level=1)[:], 1)


def test_process_killed_inside_build_pyramid_leaves_the_store_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "pyramid.ome.zarr"
    run_and_kill(
        f"""
import os, numpy as np
import voxflow_io._write as write
from voxflow_io import create_ome_zarr
writer = create_ome_zarr({str(path)!r}, shape=(8, 8), dtype="uint8", chunks=(2, 2), axes="yx",
                         levels=2)
writer.write_region((0, 0), np.ones((8, 8), np.uint8))
calls = []
downsample = write.downsample
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # the first block of level 1 is written, the second never is
        os._exit(9)
    return downsample(*args, **kwargs)
write.downsample = dying
writer.build_pyramid()
"""
    )
    for level in (0, 1):
        with pytest.raises(IncompleteStoreError, match=rf"pyramid\.ome\.zarr: {INCOMPLETE}"):
            open_volume(path, level=level)
    writer = OmeZarrWriter(path)
    writer.build_pyramid()
    writer.finish()
    np.testing.assert_array_equal(open_volume(path, level=1)[:], 1)


def test_killed_plate_creation_is_cleaned_by_the_retry(tmp_path: Path) -> None:
    path = tmp_path / "plate.ome.zarr"
    arguments = (
        "wells=['A/1', 'A/2'], fields=1, shape=(1, 1, 1, 4, 4), dtype='uint8', "
        "chunks=(1, 1, 1, 4, 4), channel_names=['DAPI']"
    )
    run_and_kill(
        f"""
import os
import voxflow_io._plate as plate_module
from voxflow_io import create_plate
written = plate_module.write_image_group
def write_then_die(*args, **kwargs):
    written(*args, **kwargs)
    os._exit(9)  # killed after the first field image
plate_module.write_image_group = write_then_die
create_plate({str(path)!r}, {arguments})
"""
    )
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".plate.ome.zarr.tmp-")
    plate = create_plate(
        path,
        wells=["A/1", "A/2"],
        fields=1,
        shape=(1, 1, 1, 4, 4),
        dtype="uint8",
        chunks=(1, 1, 1, 4, 4),
        channel_names=["DAPI"],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate.ome.zarr"]
    assert plate.wells == ["A/1", "A/2"]


def test_unfinished_plate_field_is_refused(tmp_path: Path) -> None:
    plate = create_plate(
        tmp_path / "p.ome.zarr",
        wells=["A/1"],
        fields=2,
        shape=(1, 1, 1, 4, 4),
        dtype="uint8",
        chunks=(1, 1, 1, 4, 4),
        channel_names=["DAPI"],
    )
    with plate.position("A/1", "0").writer() as writer:
        writer.write_region((0,) * 5, np.ones((1, 1, 1, 4, 4), np.uint8))
    np.testing.assert_array_equal(plate.position("A/1", "0").open()[:], 1)
    with pytest.raises(IncompleteStoreError, match=rf"p\.ome\.zarr\['A/1/1'\]: {INCOMPLETE}"):
        plate.position("A/1", "1").open()
    assert plate.position("A/1", "1").open(allow_incomplete=True).shape == (1, 1, 1, 4, 4)


def test_plate_missing_a_well_or_field_folder(tmp_path: Path) -> None:
    path = tmp_path / "p.ome.zarr"
    create_plate(
        path,
        wells=["A/1", "B/1"],
        fields=2,
        shape=(1, 1, 1, 4, 4),
        dtype="uint8",
        chunks=(1, 1, 1, 4, 4),
        channel_names=["DAPI"],
    )
    shutil.rmtree(path / "A" / "1" / "1")
    with pytest.raises(
        VolumeNotFoundError,
        match=r"p\.ome\.zarr: the plate metadata lists field image 'A/1/1', but the store has no "
        r"zarr group there \(expected .*p\.ome\.zarr/A/1/1\)",
    ):
        list(open_plate(path).positions())
    shutil.rmtree(path / "B")
    with pytest.raises(VolumeNotFoundError, match=r"lists well 'B/1', but the store has no zarr"):
        open_plate(path).fields("B/1")


def test_plate_with_a_malformed_well_path(tmp_path: Path) -> None:
    path = tmp_path / "p.ome.zarr"
    create_plate(
        path,
        wells=["A/1"],
        fields=1,
        shape=(1, 1, 1, 4, 4),
        dtype="uint8",
        chunks=(1, 1, 1, 4, 4),
        channel_names=["DAPI"],
    )
    metadata = json.loads((path / "zarr.json").read_text())
    metadata["attributes"]["ome"]["plate"]["wells"][0]["path"] = "A1"
    (path / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(MetadataError, match=r"lists well path 'A1'; expected '<row>/<column>'"):
        open_plate(path)
