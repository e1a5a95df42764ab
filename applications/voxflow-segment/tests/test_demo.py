"""The demo runs the public steps end to end; every OME-Zarr it writes is valid NGFF.

The full demo (which must reach Dice >= 0.8 on its held-out volume) runs once in CI as the
README's command; here a shortened run checks the flow and every output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import zarr


def _validate_ngff(path: Path) -> None:
    import ome_zarr_models
    import ome_zarr_models.v05.image

    model = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"), version="0.5")
    assert isinstance(model, ome_zarr_models.v05.image.Image), path


@pytest.mark.slow
def test_short_demo_writes_every_output_and_valid_ngff(run_cli: Callable, tmp_path: Path) -> None:
    from voxflow_segment.demo import run_demo

    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(
        out,
        progress=False,
        report=lines.append,
        overrides=[
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "checkpoint.every_n_steps=2",
        ],
    )
    text = "\n".join(lines)
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in text
    assert "voxflow-segment demo: held-out Dice tube" in text
    metrics = json.loads(result.metrics.read_text())
    assert set(metrics["targets"]["structures"]["classes"]) == {"1", "2"}
    assert result.checkpoint.is_file()
    assert (out / "run.yaml").is_file()
    stores = sorted(out.rglob("*.ome.zarr"))
    assert result.prediction in stores
    assert len(stores) == 5  # 2 images + 2 labels of the dataset, 1 prediction
    for store in stores:
        _validate_ngff(store)
    again = run_cli("demo", "--out", str(out), "--no-progress")
    assert again.returncode == 2
    assert "exists; pass --overwrite to replace it" in again.stderr
