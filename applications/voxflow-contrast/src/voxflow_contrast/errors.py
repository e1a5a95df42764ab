"""Errors of voxflow-contrast: one base class, one subclass per kind of failure.

Configuration errors are voxflow-utils' ``ConfigError`` (the file, the dotted key, what was
expected and what was found).
"""

from __future__ import annotations


class ContrastError(Exception):
    """Base class of every error voxflow-contrast raises on purpose."""


class ExperimentError(ContrastError, ValueError):
    """An experiment does not match its plate: channels, wells, conditions, fields of view."""


class TrackingError(ContrastError, ValueError):
    """A tracking table is missing, malformed, or its lineage is inconsistent."""


class CellIndexError(ContrastError, ValueError):
    """A stored cell index is damaged or does not describe the given experiments."""


class SamplerError(ContrastError, ValueError):
    """Sampler options that contradict each other or the index."""


class DataError(ContrastError, ValueError):
    """A crop or a batch request that the dataset cannot serve, or a bad data option."""


class ModelError(ContrastError, ValueError):
    """A run configuration, checkpoint or encoder that does not fit the data or each other."""


class EmbeddingError(ContrastError, ValueError):
    """An embeddings file that cannot be read, or lacks what an analysis of it needs."""
