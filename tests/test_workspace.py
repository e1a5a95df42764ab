"""Workspace rules that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = sorted((ROOT / "packages").iterdir())
APPLICATIONS = sorted((ROOT / "applications").iterdir())
MEMBERS = LIBRARIES + APPLICATIONS
MEMBER_NAMES = {member.name for member in MEMBERS}


def load(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())


def requirement_name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def declared(member: Path) -> set[str]:
    project = load(member)["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {requirement_name(r) for r in requirements}


def test_seven_members() -> None:
    assert [m.name for m in LIBRARIES] == [
        "voxflow-io",
        "voxflow-models",
        "voxflow-slicing",
        "voxflow-transforms",
        "voxflow-utils",
    ]
    assert [m.name for m in APPLICATIONS] == ["voxflow-contrast", "voxflow-segment"]


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda p: p.name)
def test_library_declares_no_other_member(library: Path) -> None:
    assert declared(library) & MEMBER_NAMES == set()


@pytest.mark.parametrize("application", APPLICATIONS, ids=lambda p: p.name)
def test_applications_depend_on_libraries_not_on_each_other(application: Path) -> None:
    others = {a.name for a in APPLICATIONS} - {application.name}
    assert declared(application) & others == set()
    assert {lib.name for lib in LIBRARIES} <= declared(application)


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_member_packaging(member: Path) -> None:
    config = load(member)
    import_name = member.name.replace("-", "_")
    assert config["project"]["name"] == member.name
    assert config["project"]["dynamic"] == ["version"]
    assert config["build-system"]["build-backend"] == "hatchling.build"
    assert set(config["build-system"]["requires"]) == {"hatchling", "uv-dynamic-versioning"}
    assert config["tool"]["hatch"]["version"]["source"] == "uv-dynamic-versioning"
    versioning = config["tool"]["uv-dynamic-versioning"]
    assert versioning["pattern-prefix"] == f"{member.name}-"
    assert versioning["fallback-version"] == "0.0.0"
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        f"src/{import_name}"
    ]
    # Tool configuration lives once, at the root: a member's [tool.ruff] would silently win.
    assert set(config["tool"]) == {"hatch", "uv-dynamic-versioning"}
    assert "test" in config["dependency-groups"]
    assert (member / "README.md").is_file()
    assert (member / "src" / import_name / "py.typed").is_file()
    assert (member / "tests").is_dir()


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_flat_public_api(member: Path) -> None:
    init = member / "src" / member.name.replace("-", "_") / "__init__.py"
    tree = ast.parse(init.read_text())
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert {"__all__", "__version__"} <= assigned
    # Public names come from re-exports, never from definitions in __init__ itself. PEP 562's
    # module __getattr__/__dir__ are allowed: they re-export lazily, so that importing a
    # package (a config loader, a CLI's --help) does not import torch or Lightning.
    defined = [
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.ClassDef))
        and n.name not in ("__getattr__", "__dir__")
    ]
    assert not defined


BASE_ERRORS = {
    "voxflow-io": "VoxflowIOError",
    "voxflow-slicing": "SlicingError",
    "voxflow-transforms": "TransformError",
    "voxflow-models": "ModelError",
    "voxflow-utils": "VoxflowUtilsError",
}
LIBRARY_SOURCES = [
    source for library in LIBRARIES for source in sorted((library / "src").rglob("*.py"))
]


@pytest.mark.parametrize(
    "source", LIBRARY_SOURCES, ids=lambda p: str(p.relative_to(ROOT / "packages"))
)
def test_library_raises_its_own_errors_and_never_asserts(source: Path) -> None:
    """Every ``raise`` of a library raises a class deriving from its base error (a module's
    ``__getattr__`` raises AttributeError, as PEP 562 asks); no ``assert`` checks inputs (asserts
    vanish under ``python -O``); no bare or broad ``except``."""
    import builtins
    import importlib

    library = source.relative_to(ROOT / "packages").parts[0]
    parts = source.relative_to(ROOT / "packages" / library / "src").with_suffix("").parts
    module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
    base = getattr(importlib.import_module(parts[0]), BASE_ERRORS[library])
    tree = ast.parse(source.read_text())
    getattr_lines = {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if not isinstance(target, ast.Name):
            continue  # a raised variable or attribute: an error built elsewhere
        raised = getattr(module, target.id, getattr(builtins, target.id, None))
        if not isinstance(raised, type):
            continue  # a factory (a function returning an error) or a caught instance
        if raised is AttributeError and node.lineno in getattr_lines:
            continue
        where = f"{source.relative_to(ROOT)}:{node.lineno}"
        assert issubclass(raised, base), f"{where} raises {target.id}, not a {base.__name__}"
    asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not asserts, f"{source.relative_to(ROOT)}: assert used at lines {asserts}"
    broad = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.ExceptHandler)
        and (n.type is None or (isinstance(n.type, ast.Name) and n.type.id == "Exception"))
    ]
    assert not broad, f"{source.relative_to(ROOT)}: bare or broad except at lines {broad}"
