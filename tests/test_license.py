"""The license: one BSD-3-Clause text, declared and shipped by every member."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LICENSE = ROOT / "LICENSE"
LIBRARIES = sorted((ROOT / "packages").iterdir())
MEMBERS = LIBRARIES + sorted((ROOT / "applications").iterdir())


def project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]


def test_root_license_is_bsd_3_clause() -> None:
    text = LICENSE.read_text()
    assert text.startswith("BSD 3-Clause License\n\nCopyright (c) 2026, voxflow developers\n")
    assert "Neither the name of the copyright holder nor the names of its" in text


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_member_declares_bsd_3_clause(member: Path) -> None:
    assert project(member)["license"] == "BSD-3-Clause"


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_member_ships_the_license_text(member: Path) -> None:
    # hatchling takes license files from the member's folder only (PEP 639 forbids paths
    # outside the project root), so each member holds a copy of the root LICENSE.
    assert project(member)["license-files"] == ["LICENSE"]
    assert (member / "LICENSE").read_text() == LICENSE.read_text()
