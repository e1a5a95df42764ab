"""The installed distribution and the import package agree."""

from importlib.metadata import distribution

import voxflow_transforms


def test_version_matches_distribution_metadata() -> None:
    assert voxflow_transforms.__version__ == distribution("voxflow-transforms").version


def test_public_api_is_declared() -> None:
    assert set(voxflow_transforms.__all__) <= set(dir(voxflow_transforms))
