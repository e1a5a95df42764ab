"""Bad files, environments and arguments raise the library's errors, naming what and where;
nothing a user can write makes an error message (or the time to build it) unbounded."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from voxflow_utils import (
    CallbackError,
    ConfigError,
    LossInputError,
    NTXentHCLLoss,
    NTXentLoss,
    PlotInputError,
    PreviewCallback,
    VoxflowUtilsError,
    current_rank,
    deep_supervision_weights,
    load_config,
    plot_preview,
    plot_training_curves,
    read_config_file,
    setup_logging,
)


class Trainer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_steps: int = 1000
    precision: str = "32"


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    trainer: Trainer = Trainer()
    sizes: list[int] = []


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def alias_bomb(lines: int) -> str:
    """The classic "billion laughs": each line holds nine aliases of the line before."""
    names = "abcdefghi"[:lines]
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for previous, name in itertools.pairwise(names):
        text += f"{name}: &{name} [{','.join(['*' + previous] * 9)}]\n"
    return text


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = write(tmp_path / "bomb.yaml", alias_bomb(9))
    assert len(path.read_bytes()) < 400  # a few hundred bytes describe billions of nodes
    begin = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=r"bomb\.yaml: line 7: the YAML aliases expand to more than 1,000,000 nodes "
        r"\(5,380,840 by this line\); refusing what looks like an alias bomb",
    ):
        load_config(path, Experiment)
    assert time.perf_counter() - begin < 5.0


def test_error_messages_echo_a_bounded_part_of_what_they_found(tmp_path: Path) -> None:
    # six lines expand to 597,871 nodes: allowed, but never printed whole
    path = write(tmp_path / "big.yaml", "name: x\n" + alias_bomb(6))
    with pytest.raises(ConfigError) as error:
        load_config(path, Experiment)
    message = str(error.value)
    assert f"{path}: a: unknown field (found ['lol', 'lol'," in message
    assert len(message) < 3000
    many = write(tmp_path / "many.yaml", "name: x\nsizes: [" + ", ".join(["x"] * 500) + "]\n")
    with pytest.raises(ConfigError, match=r"\.\.\. and 480 more problems$"):
        load_config(many, Experiment)
    long_value = write(tmp_path / "long.yaml", f"name: x\ntrainer:\n  max_steps: {'9x' * 5000}\n")
    with pytest.raises(ConfigError) as error:
        load_config(long_value, Experiment)
    assert len(str(error.value)) < 600


def test_recursive_and_deeply_nested_yaml(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"loop\.yaml: line 1: alias \*a refers to a node that contains it",
    ):
        read_config_file(write(tmp_path / "loop.yaml", "a: &a [1, *a]\n"))
    with pytest.raises(ConfigError, match=r"deep\.yaml: line 1: nested deeper than 100 levels"):
        read_config_file(write(tmp_path / "deep.yaml", "a: " + "[" * 200 + "]" * 200 + "\n"))


def test_duplicate_keys_name_the_file_key_and_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "run.yaml",
        "name: x\ntrainer:\n  max_steps: 5\ndata: {}\ntrainer:\n  precision: '16'\n",
    )
    with pytest.raises(
        ConfigError,
        match=rf"{path}: line 5: duplicate key 'trainer' \(first on line 2\); a repeated key "
        "would silently replace the first",
    ):
        load_config(path, Experiment)
    nested = write(tmp_path / "nested.yaml", "trainer:\n  max_steps: 1\n  max_steps: 2\n")
    with pytest.raises(ConfigError, match=r"nested\.yaml: line 3: duplicate key 'max_steps'"):
        read_config_file(nested)
    # keys merged from an anchor may be overridden: that is what merging is for
    merged = write(
        tmp_path / "merged.yaml",
        "defaults: &d {max_steps: 1, precision: '32'}\ntrainer:\n  <<: *d\n  max_steps: 2\n",
    )
    assert read_config_file(merged)["trainer"] == {"max_steps": 2, "precision": "32"}
    with pytest.raises(
        ConfigError,
        match=r"override 'trainer=\{max_steps: 1, max_steps: 2\}': line 1: duplicate key "
        r"'max_steps' \(first on line 1\)",
    ):
        load_config(None, Experiment, ["trainer={max_steps: 1, max_steps: 2}"])


def test_non_utf8_file_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(
        ConfigError,
        match=rf"{path}: not UTF-8 text: byte 0xe9 at offset 9 \(invalid continuation byte|"
        rf"{path}: not UTF-8 text: byte 0xe9 at offset 9",
    ):
        load_config(path, Experiment)
    toml = tmp_path / "latin1.toml"
    toml.write_bytes('name = "café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text: byte 0xe9 at offset 11"):
        load_config(toml, Experiment)


def test_errors_name_the_file_a_key_came_from(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", "trainer:\n  max_step: 5\n  precision: 16-mixed\n")
    run = write(tmp_path / "run.yaml", "base: base.yaml\nname: x\ntrainer:\n  max_steps: two\n")
    with pytest.raises(ConfigError) as error:
        load_config(run, Experiment)
    message = str(error.value)
    assert f"{base}: trainer.max_step: unknown field (found 5)" in message
    assert f"{run}: trainer.max_steps: Input should be a valid integer" in message


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: NTXentLoss(float("nan")),
            r"NTXentLoss: temperature must be a finite number > 0, found nan",
        ),
        (lambda: NTXentLoss(float("inf")), r"temperature must be a finite number > 0, found inf"),
        (lambda: NTXentLoss(0.0), r"temperature must be a finite number > 0, found 0.0"),
        (
            lambda: NTXentHCLLoss(0.1, beta=float("nan")),
            r"NTXentHCLLoss: beta must be a finite number >= 0, found nan",
        ),
        (lambda: NTXentHCLLoss(0.1, beta=float("inf")), r"beta must be a finite number >= 0"),
        (lambda: NTXentHCLLoss(0.1, beta=-1.0), r"beta must be a finite number >= 0, found -1.0"),
        (lambda: NTXentHCLLoss(True), r"temperature must be a finite number > 0, found True"),
        (lambda: deep_supervision_weights(2.5), r"num_scales must be an integer >= 1"),
    ],
)
def test_bad_loss_arguments_fail_at_construction(build, message: str) -> None:
    with pytest.raises(LossInputError, match=message):
        build()


def test_loss_refuses_integer_views() -> None:
    views = torch.ones(4, 3, dtype=torch.int64)
    with pytest.raises(LossInputError, match=r"views must be floating tensors, found torch\.int64"):
        NTXentLoss(0.1)(views, views)


@pytest.mark.parametrize(("name", "value"), [("RANK", "abc"), ("LOCAL_RANK", "-1")])
def test_malformed_rank_variables_are_named(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(
        ConfigError,
        match=rf"environment variable {name}='{value}' must be the process's rank, an integer "
        ">= 0",
    ):
        current_rank()
    monkeypatch.setenv(name, "3")
    assert current_rank() == 3


def test_unknown_logging_level() -> None:
    with pytest.raises(ConfigError, match=r"setup_logging: level must be one of \['NOTSET'"):
        setup_logging("INF")


def test_import_loads_neither_lightning_nor_matplotlib() -> None:
    code = (
        "import sys, voxflow_utils\n"
        "print(sorted(m for m in ('lightning', 'matplotlib', 'torch') if m in sys.modules))\n"
        "voxflow_utils.PreviewCallback\n"
        "print('lightning' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    # torch stays out too: a config loader (and a CLI's --help) needs none of them
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_preview_callback_errors_derive_from_the_library_error(tmp_path: Path) -> None:
    with pytest.raises(
        CallbackError, match=r"PreviewCallback: every_n_steps must be an integer >= 1, found 0"
    ):
        PreviewCallback(tmp_path, every_n_steps=0)
    callback = PreviewCallback(tmp_path, every_n_steps=1)
    trainer = SimpleNamespace(global_step=4, is_global_zero=True)
    with pytest.raises(
        CallbackError, match=r"PreviewCallback needs batch\['image'\]; found \['raw'\] at step 4"
    ):
        callback.on_train_batch_end(trainer, None, None, {"raw": torch.zeros(1)}, 0)  # type: ignore[arg-type]
    with pytest.raises(
        CallbackError,
        match=r"batch\['image'\] must be a \(B, C, Y, X\) or \(B, C, Z, Y, X\) tensor, found "
        r"\(2, 8, 8\)",
    ):
        callback.on_train_batch_end(trainer, None, None, {"image": torch.zeros(2, 8, 8)}, 0)  # type: ignore[arg-type]
    assert issubclass(CallbackError, VoxflowUtilsError)


def test_plot_inputs(tmp_path: Path) -> None:
    csv = write(tmp_path / "metrics.csv", "epoch,step,train_loss\n0,0,1.0\n0,1,oops\n")
    with pytest.raises(
        PlotInputError,
        match=r"metrics\.csv: row 3, column 'train_loss': expected a number, found 'oops'",
    ):
        plot_training_curves(csv, tmp_path / "curves.png")
    with pytest.raises(PlotInputError, match="plot_preview: expected a dict of named arrays"):
        plot_preview({}, tmp_path / "empty.png")
    with pytest.raises(PlotInputError, match=r"expected a \(C, Y, X\) or \(C, Z, Y, X\) array"):
        plot_preview({"image": torch.zeros(8).numpy()}, tmp_path / "flat.png")
