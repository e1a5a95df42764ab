"""The installed distribution and the import package agree."""

from importlib.metadata import distribution

import voxflow_slicing


def test_version_matches_distribution_metadata() -> None:
    assert voxflow_slicing.__version__ == distribution("voxflow-slicing").version


def test_public_api_is_declared() -> None:
    assert set(voxflow_slicing.__all__) <= set(dir(voxflow_slicing))
