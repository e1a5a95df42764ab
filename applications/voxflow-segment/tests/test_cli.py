"""The ``voxflow-segment`` command as a user runs it (a fresh process each time): help, ``init``,
``check-config`` and the way errors are reported (one ``voxflow-segment: error: ...`` line on
stderr, exit status 2, no traceback).

Every command that reaches a subcommand imports torch and Lightning (~30 s on a loaded 2-core
machine), so those tests are marked ``slow``; help and the import checks are fast.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from voxflow_segment.config import load_run_config
from voxflow_segment.planning import inputs_from_folder, plan, render_config

RunCli = Callable[..., subprocess.CompletedProcess[str]]

PROG = "voxflow-segment"
SUBCOMMANDS = {
    "init": [
        "--data",
        "--image",
        "--labels",
        "--mask",
        "--target",
        "--out",
        "--run-dir",
        "--memory-gb",
        "--base-filters",
        "--precision",
        "--seed",
        "--overwrite",
    ],
    "train": ["--config", "--resume", "--no-progress", "KEY=VALUE"],
    "predict": [
        "--checkpoint",
        "--input",
        "--output",
        "--tta",
        "--probabilities",
        "--overwrite",
        "--batch-size",
        "--overlap",
        "--blend",
        "--chunks",
        "--block-shape",
        "--sharded",
        "--accelerator",
        "--devices",
        "--num-nodes",
        "--precision",
        "--level",
        "--mask",
        "--storage-options",
        "--cache-mb",
        "--config",
        "--no-progress",
    ],
    "evaluate": ["--prediction", "--labels", "--out", "--no-progress"],
    "check-config": ["config", "KEY=VALUE", "--no-progress"],
    "demo": ["--out", "--overwrite", "--no-progress", "--verbose"],
}
HEAVY = ("torch", "lightning", "pytorch_lightning", "monai", "torchvision")
TINY_MODEL = (
    "model.kwargs={kernel_size: [3, 3, 3], strides: [1, 2, 2], upsample_kernel_size: [2, 2], "
    "filters: [4, 8, 16], norm_name: instance, deep_supr_num: 1}"
)


def _fails_cleanly(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit status 2, ``voxflow-segment: error: ...`` matching ``message`` on stderr, no
    traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert f"{PROG}: error: " in result.stderr, result.stderr
    assert "error" not in result.stdout, result.stdout
    assert re.search(message, result.stderr, re.DOTALL), result.stderr


def _imported_modules(stderr: str) -> set[str]:
    """Top-level names of the modules ``python -X importtime`` reported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name.split(".")[0])
    return names


@pytest.fixture
def planned(tmp_path: Path, dataset: Path) -> Path:
    """``run.yaml`` planned from the shared synthetic dataset through the Python API."""
    result = plan(inputs_from_folder(dataset), run_dir=tmp_path / "runs" / "planned")
    path = tmp_path / "run.yaml"
    path.write_text(render_config(result.config, result.reasons))
    return path


# --------------------------------------------------------------------------- help
def test_help_lists_every_subcommand(run_cli: RunCli) -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {PROG}")
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", result.stdout, re.MULTILINE), name


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_subcommand_help_lists_its_options(run_cli: RunCli, command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {PROG} {command}")
    for option in SUBCOMMANDS[command]:
        assert option in result.stdout, f"{command} --help does not list {option}"


@pytest.mark.parametrize("command", [None, *sorted(SUBCOMMANDS)])
def test_help_imports_no_heavy_library(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "voxflow_segment.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = _imported_modules(result.stderr)
    assert "voxflow_segment" in modules  # the report is parsed
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


# The command runs with an import hook that refuses torch and Lightning.
_WITHOUT_HEAVY_IMPORTS = f"""
import runpy, sys

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError(f"{{name}} imported before the arguments were checked")
        return None

sys.meta_path.insert(0, _Refuse())
runpy.run_module("voxflow_segment.cli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["init", "--data", "{dataset}", "--out", "{existing}"], r"exists; pass --overwrite"),
        (["train"], r"give --config run\.yaml"),
        (
            ["evaluate", "--prediction", "p.ome.zarr", "--labels", "a.tif", "--labels", "b.tif"],
            r"name each target",
        ),
    ],
    ids=["init-existing-out", "train-without-config", "evaluate-unnamed-labels"],
)
def test_argument_mistakes_are_answered_without_heavy_imports(
    tmp_path: Path, dataset: Path, args: list[str], message: str
) -> None:
    existing = tmp_path / "run.yaml"
    existing.write_text("seed: 0\n")
    argv = [a.format(dataset=dataset, existing=existing) for a in args]
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_HEAVY_IMPORTS, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _fails_cleanly(result, message)


# --------------------------------------------------------------------------- init
@pytest.mark.slow
def test_init_writes_the_plan_and_refuses_to_overwrite(
    run_cli: RunCli, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "configs" / "run.yaml"
    result = run_cli("init", "--data", str(dataset), "--out", str(out))
    assert result.returncode == 0, result.stderr
    reference = plan(inputs_from_folder(dataset), run_dir=tmp_path / "elsewhere")
    for reason in reference.reasons:
        assert f"  - {reason}\n" in result.stdout
    assert f"wrote {out}\n" in result.stdout
    assert f"next: {PROG} check-config {out} && {PROG} train --config {out}" in result.stdout
    config = load_run_config(out)
    assert config.run_dir == tmp_path / "configs" / "runs" / "run"
    assert config.data.model_dump() == reference.config.data.model_dump()
    assert config.model == reference.config.model
    written = out.read_text()

    again = run_cli("init", "--data", str(dataset), "--out", str(out))
    _fails_cleanly(again, rf"{PROG}: error: {re.escape(str(out))}: exists; pass --overwrite")
    assert out.read_text() == written


@pytest.mark.slow
def test_init_from_image_and_label_pairs(run_cli: RunCli, dataset: Path, tmp_path: Path) -> None:
    images = [dataset / "images" / "vol0.ome.zarr", dataset / "images" / "vol1.tif"]
    labels = [
        dataset / "labels" / "vol0_structures.ome.zarr",
        dataset / "labels" / "vol1_structures.tif",
    ]
    out = tmp_path / "pairs.yaml"
    result = run_cli(
        "init",
        "--image", str(images[0]), "--labels", str(labels[0]),
        "--image", str(images[1]), "--labels", str(labels[1]),
        "--target", "ink", "--out", str(out), "--run-dir", str(tmp_path / "here"),
        "--precision", "32-true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = load_run_config(out)
    assert list(config.data.targets) == ["ink"]
    assert [(v.id, v.image, v.labels) for v in config.data.volumes] == [
        ("vol0", images[0], {"ink": labels[0]}),
        ("vol1", images[1], {"ink": labels[1]}),
    ]
    assert config.run_dir == tmp_path / "here"
    assert config.trainer.precision == "32-true"
    assert config.data.validation_fraction == pytest.approx(0.2)  # two volumes


@pytest.mark.slow
def test_init_with_an_unknown_precision(run_cli: RunCli, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.yaml"
    result = run_cli("init", "--data", str(dataset), "--out", str(out), "--precision", "16")
    # argparse answers before anything runs: its own usage line and message, status 2.
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(
        r"argument --precision: invalid choice: '16' \(choose from .*'bf16-mixed'", result.stderr
    )
    assert not out.exists()


# --------------------------------------------------------------------------- check-config
def _windows(size: int, patch: int, step: int) -> int:
    """Grid windows along one axis: every ``step`` voxels, the last one flush with the end."""
    return len({*range(0, size - patch + 1, step), size - patch})


@pytest.mark.slow
def test_check_config_on_a_planned_file(run_cli: RunCli, planned: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "checked"
    result = run_cli(
        "check-config", str(planned), "patch.size=[16, 16, 16]", TINY_MODEL,
        f"run_dir={run_dir}", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{PROG} check-config: OK\n")
    # The dataset: three 24x32x32 volumes, the last held out; 16^3 windows with 50% overlap.
    per_volume = _windows(24, 16, 8) * _windows(32, 16, 8) ** 2
    match = re.search(
        r"patches\s+chunk \[16, 16, 16\]: (\d+) training, (\d+) validation windows", result.stdout
    )
    assert match, result.stdout
    assert (int(match[1]), int(match[2])) == (2 * per_volume, per_volume)
    assert re.search(rf"run_dir\s+{re.escape(str(run_dir))}$", result.stdout, re.MULTILINE)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_check_config_typo_in_an_override(run_cli: RunCli, planned: Path) -> None:
    result = run_cli("check-config", str(planned), "trainer.max_stepz=3")
    _fails_cleanly(
        result,
        r"override 'trainer\.max_stepz=3': unknown field 'trainer\.max_stepz'; fields allowed "
        r"in trainer: \[.*'max_steps'.*\]",
    )


@pytest.mark.slow
def test_check_config_typo_in_the_file(run_cli: RunCli, planned: Path) -> None:
    text = planned.read_text()
    assert "\n  max_steps: 25000" in text
    planned.write_text(text.replace("\n  max_steps: 25000", "\n  max_stepz: 25000"))
    result = run_cli("check-config", str(planned))
    _fails_cleanly(
        result,
        rf"{re.escape(str(planned))}: trainer\.max_stepz: unknown field \(found 25000\); "
        r"allowed fields: \[.*'max_steps'.*\]",
    )


@pytest.mark.slow
def test_check_config_wrong_type(run_cli: RunCli, planned: Path) -> None:
    result = run_cli("check-config", str(planned), "patch.size=big")
    _fails_cleanly(result, r"override 'patch\.size=big': patch\.size: .*\(found 'big'\)")


@pytest.mark.slow
def test_check_config_network_too_shallow_for_deep_supervision(
    run_cli: RunCli, planned: Path
) -> None:
    # Without deep_supr_num a 3-level DynUNet gets the deepest supervision it can have (1).
    result = run_cli(
        "check-config", str(planned), "patch.size=[16, 16, 16]",
        TINY_MODEL.replace(", deep_supr_num: 1", ""), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "check-config", str(planned), "patch.size=[16, 16, 16]",
        TINY_MODEL.replace(", deep_supr_num: 1", ", deep_supr_num: 2"), "--no-progress",
    )  # fmt: skip
    _fails_cleanly(
        result,
        r"model\.kwargs\.deep_supr_num: must be an integer in 1\.\.1 for a DynUNet with 3 "
        r"levels, found 2",
    )


# --------------------------------------------------------------------------- other usage errors
@pytest.mark.slow
def test_train_without_config_or_resume(run_cli: RunCli) -> None:
    result = run_cli("train")
    _fails_cleanly(
        result, r"give --config run\.yaml \(or --resume run_dir=PATH to continue a run\)"
    )


@pytest.mark.slow
def test_evaluate_with_two_unnamed_labels(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(
        "evaluate", "--prediction", str(tmp_path / "p.ome.zarr"),
        "--labels", str(tmp_path / "a.tif"), "--labels", str(tmp_path / "b.tif"),
    )  # fmt: skip
    _fails_cleanly(result, r"with several --labels, name each target: --labels TARGET=PATH")
