"""The demo's pipeline, shortened to a few training steps (the full demo runs in .ci/run)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata
import pytest

from voxflow_contrast.cli import main
from voxflow_contrast.errors import ModelError


@pytest.mark.slow
def test_demo_writes_every_step_and_reports_both_probes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxflow_contrast.demo import run_demo

    lines: list[str] = []
    result = run_demo(
        tmp_path / "demo",
        progress=False,
        report=lines.append,
        overrides=["trainer.max_steps=3", "logging.loggers=[csv]"],
    )
    text = "\n".join(lines)
    for step in ("[1/5]", "[2/5] build-index", "[3/5] train", "[4/5] embed", "[5/5] linear probe"):
        assert step in text
    summary = json.loads(result.summary.read_text())
    assert summary["steps"] == 3
    assert summary["accuracy"] == pytest.approx(result.accuracy)
    assert summary["untrained_accuracy"] == pytest.approx(result.untrained_accuracy)
    for path in (result.config, result.checkpoint, result.embeddings, result.untrained_embeddings):
        assert path.is_file(), path
    trained = anndata.read_h5ad(result.embeddings)
    untrained = anndata.read_h5ad(result.untrained_embeddings)
    assert trained.shape == untrained.shape
    assert (trained.obs["t"].to_numpy() == untrained.obs["t"].to_numpy()).all()
    assert not (trained.X == untrained.X).all()  # three steps changed the weights
    for name in ("trained", "untrained"):
        probe = json.loads(
            (tmp_path / "demo" / "probe" / name / "probe-condition.json").read_text()
        )
        assert probe["t_min"] == 16
        assert len(probe["fold_accuracy"]) == 4
    assert f"accuracy {result.accuracy:.3f} trained" in text

    # A second demo into the same folder refuses, naming --overwrite.
    with pytest.raises(ModelError, match=r"demo: exists; pass --overwrite to replace it"):
        run_demo(tmp_path / "demo", progress=False, report=lines.append)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
