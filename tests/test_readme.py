"""The root README shows what a newcomer needs, and stays true as the repository grows."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_is_listed_with_its_group(script: Path) -> None:
    # The bench group is not installed by `uv sync`: the command must ask for it.
    assert f"uv run --group bench python benchmarks/{script.name}" in README


def test_the_two_commands() -> None:
    # Each alone in its own block, as .ci/run runs them ("tests" and "demo").
    assert "\n```\nuv run voxflow-segment demo\n```\n" in README
    assert "\n```\nuv run voxflow-contrast demo\n```\n" in README
    assert "\n```\nuv run pytest\n```\n" in README


def test_install_from_a_clone() -> None:
    assert "not on the package index yet" in README
    assert "pip install ./packages/voxflow-slicing" in README
