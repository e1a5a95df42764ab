"""voxflow-transforms: package metadata only; its public API arrives with its own issue."""

from importlib.metadata import version

__version__ = version("voxflow-transforms")

__all__ = ["__version__"]
