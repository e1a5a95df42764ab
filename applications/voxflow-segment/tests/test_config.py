"""The config schema: reference docs stay current, paths resolve, fingerprints mean what
they say."""

from __future__ import annotations

from pathlib import Path

from voxflow_segment.config import RunConfig, config_reference, load_run_config

DOCS = Path(__file__).parents[3] / "docs" / "applications" / "voxflow-segment-config.md"


def test_reference_docs_are_generated_from_the_schema() -> None:
    assert DOCS.read_text() == config_reference(), (
        "regenerate with: uv run python -c 'from voxflow_segment.config import "
        'config_reference; print(config_reference(), end="")\' > ' + str(DOCS)
    )


def test_every_field_is_documented() -> None:
    text = config_reference()
    for name in RunConfig.model_fields:
        assert f"| `{name}` |" in text
    assert "| `trainer.max_steps` |" in text
    assert "| `augment.flip.prob` |" in text


def test_relative_paths_resolve_against_the_file(
    tmp_path: Path, base_config: dict, write_config
) -> None:
    base_config["run_dir"] = "runs/a"
    base_config["data"]["volumes"][0]["image"] = "images/vol0.ome.zarr"
    path = write_config(tmp_path / "cfg" / "run.yaml", base_config)
    config = load_run_config(path)
    assert config.run_dir == tmp_path / "cfg" / "runs" / "a"
    assert config.data.volumes[0].image == tmp_path / "cfg" / "images" / "vol0.ome.zarr"


def test_resume_fingerprint_ignores_only_stopping_and_display(base_config: dict) -> None:
    config = RunConfig.model_validate(base_config)
    longer = config.model_copy(deep=True)
    longer.trainer.max_steps = 100
    longer.trainer.max_time = "00:01:00:00"
    longer.trainer.enable_progress_bar = True
    assert longer.resume_fingerprint() == config.resume_fingerprint()
    other = config.model_copy(deep=True)
    other.loader.batch_size = 3
    assert other.resume_fingerprint() != config.resume_fingerprint()
    assert other.model_fingerprint() == config.model_fingerprint()
    wider = config.model_copy(deep=True)
    wider.model.kwargs["filters"] = [8, 16, 32]
    assert wider.model_fingerprint() != config.model_fingerprint()
