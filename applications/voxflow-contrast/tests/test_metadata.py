"""The installed distribution and the import package agree."""

from importlib.metadata import distribution

import voxflow_contrast


def test_version_matches_distribution_metadata() -> None:
    assert voxflow_contrast.__version__ == distribution("voxflow-contrast").version


def test_public_api_is_declared() -> None:
    assert set(voxflow_contrast.__all__) <= set(dir(voxflow_contrast))
