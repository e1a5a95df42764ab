"""The installed distribution and the import package agree."""

from importlib.metadata import distribution

import voxflow_models


def test_version_matches_distribution_metadata() -> None:
    assert voxflow_models.__version__ == distribution("voxflow-models").version


def test_public_api_is_declared() -> None:
    assert set(voxflow_models.__all__) <= set(dir(voxflow_models))
