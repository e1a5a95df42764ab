"""The ``voxflow-contrast`` command line: help, check-config, build-index (built, reused,
rebuilt), errors, and the package's lazy public API. Bad inputs: test_bad_inputs.py."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import voxflow_contrast
from voxflow_contrast import cli
from voxflow_contrast.cli import main
from voxflow_contrast.experiments import load_experiments
from voxflow_contrast.index import CellIndex, build_index

PROG = "voxflow-contrast"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _index_path(out: str) -> Path:
    (line,) = [x for x in out.splitlines() if x.startswith("index: ")]
    return Path(line.removeprefix("index: "))


# --------------------------------------------------------------------------- help
COMMANDS = ("build-index", "check-config", "train", "embed", "linear-probe", "demo")


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_command_has_help_with_examples(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {PROG} {' '.join(command)}".rstrip())
    assert "examples:\n  voxflow-contrast " in out
    for example in [line.strip() for line in out.splitlines() if line.startswith("  voxflow-")]:
        assert example.split()[1] in COMMANDS


def test_missing_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["build-index"])
    assert stop.value.code == 2
    assert "the following arguments are required: --experiments" in capsys.readouterr().err


def test_console_script_and_help_import_nothing_heavy() -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=PROG)
    assert script.value == "voxflow_contrast.cli:main"
    probe = (
        "import sys, contextlib, io\n"
        "import voxflow_contrast\n"
        "from voxflow_contrast.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['build-index', '--help'])\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'zarr', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_package_exports() -> None:
    for name in voxflow_contrast.__all__:
        assert getattr(voxflow_contrast, name) is not None
    assert voxflow_contrast.build_index is build_index
    assert set(voxflow_contrast.__all__) <= set(dir(voxflow_contrast))
    with pytest.raises(AttributeError, match="has no attribute 'predict'"):
        voxflow_contrast.predict  # noqa: B018


# --------------------------------------------------------------------------- check-config
def test_check_config_prints_ok_and_the_summary_and_writes_nothing(
    indexed_yaml: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = _files(tmp_path)
    code, out, err = _run(capsys, "check-config", "--experiments", str(indexed_yaml))
    assert code == 0, err
    assert _files(tmp_path) == before
    lines = out.splitlines()
    assert lines[0] == (
        f"{PROG} check-config: ok: {indexed_yaml} (2 experiment(s); no voxels read, "
        f"nothing written)"
    )
    assert lines[1] == "index options: patch_size [16, 16], border shift, max_shift 4, tau [1, 2]"
    built = build_index(load_experiments(indexed_yaml), cache_dir=tmp_path / "x", progress=False)
    assert "\n".join(lines[2:]) == built.summary.format()
    assert "checking" in err  # the progress bar


# --------------------------------------------------------------------------- build-index
def test_build_index_builds_reuses_and_rebuilds_when_a_csv_changes(
    indexed_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build-index", "--experiments", str(indexed_yaml), "--no-progress"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert err == ""  # no progress bar, warnings only
    path = _index_path(out)
    assert path.parent == indexed_yaml.parent / ".voxflow-contrast"
    stored = CellIndex.load(path)
    assert out == (
        f"{PROG} build-index: built the cell index (no stored index)\n"
        f"index options: patch_size [16, 16], border shift, max_shift 4, tau [1, 2]\n"
        f"{stored.summary.format()}\n"
        f"index: {path}\n"
    )
    written = path.stat().st_mtime_ns

    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert out.splitlines()[0] == f"{PROG} build-index: reused the cell index (inputs unchanged)"
    assert _index_path(out) == path
    assert path.stat().st_mtime_ns == written

    csv = indexed_yaml.parent / "data" / "exp2_tracks" / "A" / "1" / "0" / "tracks.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-1]))  # the last observation is gone
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert out.splitlines()[0] == (
        f"{PROG} build-index: rebuilt the cell index (changed: table {csv})"
    )
    rebuilt = CellIndex.load(path)
    assert rebuilt.summary.total["observations"] + rebuilt.summary.total["dropped"] == (
        stored.summary.total["observations"] + stored.summary.total["dropped"] - 1
    )

    code, out, _ = _run(capsys, *argv, "--rebuild")
    assert code == 0
    assert out.splitlines()[0] == f"{PROG} build-index: rebuilt the cell index (rebuild requested)"


def test_overrides_reach_the_index(
    indexed_yaml: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _run(
        capsys,
        "build-index",
        "--experiments",
        str(indexed_yaml),
        "index.tau=[1,1]",
        "index.cache_dir=elsewhere",
        "index.border=drop",
        "--no-progress",
    )
    assert code == 0, err
    path = _index_path(out)
    assert path.parent == tmp_path / "elsewhere"  # relative to the experiments file
    assert CellIndex.load(path).options == {
        "patch_size": [16, 16],
        "border": "drop",
        "max_shift": 4,
        "tau": [1, 1],
    }
    assert "border drop, max_shift 4, tau [1, 1]" in out


def test_verbose_logs_the_milestones(
    indexed_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build-index", "--experiments", str(indexed_yaml), "--no-progress"]
    _run(capsys, *argv)
    code, _, err = _run(capsys, *argv, "-v")
    assert code == 0
    assert "INFO voxflow_contrast.experiments: registered 2 experiment(s), 8 field(s)" in err
    assert "INFO voxflow_contrast.index: reusing the cell index" in err
    assert "DEBUG" not in err
    code, _, err = _run(capsys, *argv, "--rebuild", "-vv")
    assert code == 0
    assert "DEBUG voxflow_contrast.tracks: " in err  # every table read is reported


# --------------------------------------------------------------------------- errors
def test_unexpected_errors_keep_their_traceback(
    indexed_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("voxflow_contrast.index.check_experiments", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["check-config", "--experiments", str(indexed_yaml)])


def test_interrupt(
    indexed_yaml: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("voxflow_contrast.index.build_index", interrupted)
    code, _, err = _run(capsys, "build-index", "--experiments", str(indexed_yaml))
    assert (code, err) == (130, f"{PROG}: interrupted\n")


def test_handled_errors_are_the_libraries_and_missing_files() -> None:
    from voxflow_contrast.errors import ContrastError
    from voxflow_io import VoxflowIOError
    from voxflow_utils import ConfigError

    handled = cli._handled_errors()
    for error in (ConfigError, ContrastError, VoxflowIOError, FileNotFoundError):
        assert issubclass(error, handled)
    assert not issubclass(RuntimeError, handled)


# --------------------------------------------------------------------------- as a user runs it
def test_as_a_subprocess(indexed_yaml: Path) -> None:
    command = [sys.executable, "-m", "voxflow_contrast.cli", "build-index"]
    command += ["--experiments", str(indexed_yaml), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{PROG} build-index: built the cell index (no stored index)\n")
    assert _index_path(done.stdout).is_file()

    failed = subprocess.run(
        [*command, "index.tau=[0,2]"], capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.startswith(f"{PROG}: error: invalid configuration:\n")
    assert "index.tau: Value error, tau range [0, 2] includes 0 or changes sign" in failed.stderr
    assert "Traceback" not in failed.stderr
