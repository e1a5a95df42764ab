"""The installed distribution and the import package agree."""

from importlib.metadata import distribution

import voxflow_segment


def test_version_matches_distribution_metadata() -> None:
    assert voxflow_segment.__version__ == distribution("voxflow-segment").version


def test_public_api_is_declared() -> None:
    assert set(voxflow_segment.__all__) <= set(dir(voxflow_segment))
