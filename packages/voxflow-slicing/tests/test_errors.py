"""Every error voxflow-slicing raises derives from SlicingError; no assert checks inputs."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import voxflow_slicing
from voxflow_slicing import SlicingError

SOURCES = sorted(Path(voxflow_slicing.__file__).parent.glob("*.py"))


def raised_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of the class or callable each ``raise`` statement raises."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name):
                names.append((node.lineno, target.id))
            else:
                names.append((node.lineno, ast.unparse(target)))
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_raise_is_a_slicing_error(path: Path) -> None:
    module = importlib.import_module(f"voxflow_slicing.{path.stem}")
    tree = ast.parse(path.read_text())
    for line, name in raised_names(tree):
        if name == "error":  # the checks raise the error class their caller passes
            continue
        raised = getattr(module, name, None)
        assert isinstance(raised, type), f"{path.name}:{line} raises {name}, not a class"
        assert issubclass(raised, SlicingError), f"{path.name}:{line} raises {name}"
    asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not asserts, f"{path.name}: assert used at lines {asserts}"
    broad = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.ExceptHandler)
        and (n.type is None or (isinstance(n.type, ast.Name) and n.type.id == "Exception"))
    ]
    assert not broad, f"{path.name}: bare or broad except at lines {broad}"


def test_error_classes_match_their_builtins() -> None:
    for name in (
        "GridError",
        "ScreeningError",
        "PatchIndexError",
        "SamplerError",
        "PlaneError",
        "StitchError",
    ):
        assert issubclass(getattr(voxflow_slicing, name), ValueError)
    assert issubclass(voxflow_slicing.BorderError, IndexError)


def test_fingerprint_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(SlicingError, match="cannot fingerprint a path that does not exist"):
        voxflow_slicing.fingerprint(tmp_path / "missing.npy")
    with pytest.raises(SlicingError, match="fingerprint takes a path or a numpy array, found int"):
        voxflow_slicing.fingerprint(3)  # type: ignore[arg-type]
