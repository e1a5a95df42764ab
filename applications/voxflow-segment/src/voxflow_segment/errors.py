"""Errors of voxflow-segment: one base class, one subclass per kind of failure.

Configuration errors are voxflow-utils' ``ConfigError`` (the file, the dotted key, what was
expected and what was found); library errors are re-raised as these with the file named.
"""

from __future__ import annotations


class SegmentError(Exception):
    """Base class of every error voxflow-segment raises on purpose."""


class DataError(SegmentError, ValueError):
    """A volume, its labels or its mask are missing, malformed or do not match each other."""


class RunDirError(SegmentError):
    """A run directory holds another run, or a run to resume is not there."""


class CheckpointError(SegmentError):
    """A checkpoint is missing, damaged, or was trained with a different model configuration."""


class OutputExistsError(SegmentError, FileExistsError):
    """An output path exists and overwriting was not asked for."""


class PredictResumeError(SegmentError):
    """An unfinished prediction in the output belongs to another run (checkpoint, input or
    options differ), or its records are damaged."""
