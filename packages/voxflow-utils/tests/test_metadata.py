"""The installed distribution and the import package agree."""

from importlib.metadata import distribution

import voxflow_utils


def test_version_matches_distribution_metadata() -> None:
    assert voxflow_utils.__version__ == distribution("voxflow-utils").version


def test_public_api_is_declared() -> None:
    assert set(voxflow_utils.__all__) <= set(dir(voxflow_utils))
