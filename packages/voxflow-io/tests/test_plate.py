"""HCS plates: created plates validate as NGFF HCS and iterate every well and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from voxflow_io import create_plate, open_plate

from .conftest import ramp


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_create_fill_and_iterate_plate(tmp_path: Path, version: str) -> None:
    import ome_zarr_models
    import ome_zarr_models.v04.hcs
    import ome_zarr_models.v05.hcs

    path = tmp_path / "plate.ome.zarr"
    shape = (3, 2, 1, 16, 16)
    plate = create_plate(
        path,
        wells=["B/2", "A/1", "A/10"],
        fields=2,
        shape=shape,
        dtype="uint16",
        chunks=(1, 1, 1, 16, 16),
        channel_names=["Phase3D", "GFP"],
        ngff_version=version,
        voxel_size=(1.0, 1.0, 2.0, 0.3, 0.3),
        unit="micrometer",
    )
    assert plate.rows == ["A", "B"]
    assert plate.columns == ["1", "2", "10"]
    positions = list(plate.positions())
    assert [(p.well, p.field) for p in positions] == [
        ("B/2", "0"),
        ("B/2", "1"),
        ("A/1", "0"),
        ("A/1", "1"),
        ("A/10", "0"),
        ("A/10", "1"),
    ]
    data = {}
    for i, position in enumerate(positions):
        data[position.key] = ramp(shape) + i
        with position.writer() as writer:
            writer.write_region((0, 0, 0, 0, 0), data[position.key])
    model = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"), version=version)
    expected = {"0.4": ome_zarr_models.v04.hcs.HCS, "0.5": ome_zarr_models.v05.hcs.HCS}
    assert isinstance(model, expected[version])
    reopened = open_plate(path)
    for position in reopened.positions():
        assert position.channel_names == ("Phase3D", "GFP")
        volume = position.open()
        assert volume.axes == "tczyx"
        assert volume.voxel_size == (1.0, 1.0, 2.0, 0.3, 0.3)
        np.testing.assert_array_equal(volume[:], data[position.key])


def test_plate_read_by_ome_zarr_reader(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate as OmeZarrPlate
    from ome_zarr.reader import Reader

    path = tmp_path / "plate.ome.zarr"
    plate = create_plate(
        path,
        wells=["A/1"],
        fields=1,
        shape=(1, 1, 1, 8, 8),
        dtype="uint8",
        chunks=(1, 1, 1, 8, 8),
        channel_names=["DAPI"],
        ngff_version="0.4",
    )
    with plate.position("A/1", "0").writer() as writer:
        writer.write_region((0,) * 5, np.full((1, 1, 1, 8, 8), 9, np.uint8))
    nodes = list(Reader(parse_url(str(path)))())
    assert any(node.specs and isinstance(node.specs[0], OmeZarrPlate) for node in nodes)
    assert int(np.asarray(nodes[0].data[0]).max()) == 9
