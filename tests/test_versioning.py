"""Each member's version comes from its own tag prefix (uv-dynamic-versioning)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wheel_version(dist: Path, name: str) -> str:
    (wheel,) = dist.glob(f"{name.replace('-', '_')}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    return next(line.split(": ", 1)[1] for line in lines if line.startswith("Version: "))


@pytest.mark.slow
def test_tag_prefix_versions_only_its_package(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "uv must be on PATH (the README's commands run through it)"
    clone = tmp_path / "clone"
    clone.mkdir()
    files = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, files.split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    run("git", "init", "-q", cwd=clone)
    run("git", "add", "-A", cwd=clone)
    identity = ("-c", "user.name=voxflow-test", "-c", "user.email=test@voxflow.invalid")
    run("git", *identity, "commit", "-q", "-m", "snapshot", cwd=clone)
    run("git", *identity, "tag", "-a", "voxflow-io-v1.2.3", "-m", "release", cwd=clone)
    dist = tmp_path / "dist"
    for package in ("voxflow-io", "voxflow-slicing"):
        run(
            uv,
            "build",
            "--offline",
            "--package",
            package,
            "--no-sources",
            "--wheel",
            "--out-dir",
            str(dist),
            cwd=clone,
        )
    assert wheel_version(dist, "voxflow-io") == "1.2.3"
    slicing = wheel_version(dist, "voxflow-slicing")
    assert slicing != "1.2.3"
    assert slicing.startswith("0.0.0")
