"""Dataset discovery over images/ labels/ masks/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from voxflow_io import DatasetLayoutError, discover_dataset


def make_layout(root: Path, files: dict[str, tuple[int, ...]]) -> None:
    for name, shape in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".npy"):
            np.save(path, np.zeros(shape, np.uint8))
        else:
            tifffile.imwrite(path, np.zeros(shape, np.uint8), photometric="minisblack")


def test_records_match_ids_targets_and_masks(tmp_path: Path) -> None:
    make_layout(
        tmp_path,
        {
            "images/scroll_1.tif": (4, 8, 8),
            "images/scroll_10.npy": (4, 8, 8),
            "images/scroll_2.npy": (2, 4, 8, 8),  # c z y x: labels are compared without c
            "labels/scroll_1_ink.tif": (4, 8, 8),
            "labels/scroll_1_surface.tif": (4, 8, 8),
            "labels/scroll_10_ink.npy": (4, 8, 8),
            "labels/scroll_10_surface.tif": (4, 8, 8),
            "labels/scroll_2_ink.tif": (4, 8, 8),
            "labels/scroll_2_surface.tif": (4, 8, 8),
            "masks/scroll_10.tif": (4, 8, 8),
        },
    )
    records = discover_dataset(tmp_path)
    assert [r.id for r in records] == ["scroll_1", "scroll_2", "scroll_10"]
    assert set(records[0].labels) == {"ink", "surface"}
    assert records[2].labels["ink"].name == "scroll_10_ink.npy"
    assert records[2].mask is not None
    assert records[0].mask is None


def test_unlabeled_images_only_when_allowed(tmp_path: Path) -> None:
    make_layout(
        tmp_path,
        {
            "images/a.tif": (4, 4),
            "images/b.tif": (4, 4),
            "labels/a_ink.tif": (4, 4),
        },
    )
    with pytest.raises(DatasetLayoutError, match=r"b\.tif: image has no labels"):
        discover_dataset(tmp_path)
    records = discover_dataset(tmp_path, allow_unlabeled=True)
    assert [dict(r.labels) for r in records][1] == {}


def test_ids_with_underscores_take_the_longest_matching_image(tmp_path: Path) -> None:
    make_layout(
        tmp_path,
        {
            "images/a.tif": (4, 4),
            "images/a_b.tif": (4, 4),
            "labels/a_ink.tif": (4, 4),
            "labels/a_b_ink.tif": (4, 4),
        },
    )
    records = {r.id: r for r in discover_dataset(tmp_path, targets=["ink"])}
    assert records["a_b"].labels["ink"].name == "a_b_ink.tif"
    assert records["a"].labels["ink"].name == "a_ink.tif"
