"""Configuration loading: messages name the source, the dotted path, expected and found."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from voxflow_utils import ConfigError, apply_overrides, load_config


class Trainer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_steps: int = 1000
    precision: str = "32"


class Data(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patch_size: list[int] = [64, 64, 64]
    batch_size: int = 2


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    trainer: Trainer = Trainer()
    data: Data = Data()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_toml_base_and_overrides(tmp_path: Path) -> None:
    write(
        tmp_path / "base.toml", 'name = "base"\n[trainer]\nmax_steps = 10\nprecision = "16-mixed"\n'
    )
    config_path = write(
        tmp_path / "run.yaml", "base: base.toml\nname: run\ntrainer:\n  max_steps: 20\n"
    )
    config = load_config(
        config_path, Experiment, ["trainer.max_steps=100", "data.patch_size=[32, 32, 16]"]
    )
    assert config.name == "run"
    assert config.trainer.max_steps == 100
    assert config.trainer.precision == "16-mixed"  # merged from the base
    assert config.data.patch_size == [32, 32, 16]


def test_typo_names_file_path_and_allowed_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", "name: x\ntrainer:\n  max_step: 5\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, Experiment)
    message = str(error.value)
    assert (
        f"{path}: trainer.max_step: unknown field (found 5); allowed fields: ['max_steps', 'precision']"
        in message
    )


def test_wrong_type_names_expected_and_found(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", "name: x\ndata:\n  batch_size: two\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, Experiment)
    assert (
        f"{path}: data.batch_size: Input should be a valid integer, unable to parse string as an integer (found 'two')"
        in str(error.value)
    )


def test_bad_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", "name: x\n")
    with pytest.raises(
        ConfigError,
        match=r"override 'trainer.max_stepz=3': unknown field 'trainer.max_stepz'; fields allowed in trainer: \['max_steps', 'precision'\]",
    ):
        load_config(path, Experiment, ["trainer.max_stepz=3"])
    with pytest.raises(
        ConfigError,
        match=r"override 'trainer.max_steps=many': trainer.max_steps: Input should be a valid integer.*\(found 'many'\)",
    ):
        load_config(path, Experiment, ["trainer.max_steps=many"])
    with pytest.raises(ConfigError, match=r"expected dotted\.path=value"):
        load_config(path, Experiment, ["trainer.max_steps"])
    with pytest.raises(ConfigError, match=r"name is not a section"):
        load_config(path, Experiment, ["name.first=a"])


def test_missing_required_field_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run.yaml: name: Field required"):
        load_config(write(tmp_path / "run.yaml", "trainer: {}\n"), Experiment)
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml", Experiment)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n"), Experiment)
    write(tmp_path / "a.yaml", "base: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="form a cycle"):
        load_config(tmp_path / "a.yaml", Experiment)


def test_overrides_enter_optional_sections_and_mappings() -> None:
    from typing import Any

    from pydantic import BaseModel, ConfigDict

    class Leaf(BaseModel):
        model_config = ConfigDict(extra="forbid")
        prob: float = 0.5

    class Root(BaseModel):
        model_config = ConfigDict(extra="forbid")
        flip: Leaf | None = None
        losses: dict[str, Leaf] = {}
        kwargs: dict[str, Any] = {}
        size: list[int] = [1]

    data = apply_overrides(
        {},
        ["flip.prob=0.25", "losses.ink.prob=1", "kwargs.filters=[8, 16]", "kwargs.a.b=2"],
        Root,
    )
    assert data == {
        "flip": {"prob": 0.25},
        "losses": {"ink": {"prob": 1}},
        "kwargs": {"filters": [8, 16], "a": {"b": 2}},
    }
    with pytest.raises(
        ConfigError, match=r"unknown field 'flip.prop'; fields allowed in flip: \['prob'\]"
    ):
        apply_overrides({}, ["flip.prop=1"], Root)
    with pytest.raises(ConfigError, match=r"unknown field 'losses.ink.prop'"):
        apply_overrides({}, ["losses.ink.prop=1"], Root)
    with pytest.raises(ConfigError, match=r"size is not a section, so it has no field 'x'"):
        apply_overrides({}, ["size.x=1"], Root)
