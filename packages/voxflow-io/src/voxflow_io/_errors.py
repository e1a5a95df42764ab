"""Exceptions raised by voxflow-io: one base class, one subclass per kind of failure."""

from __future__ import annotations


class VoxflowIOError(Exception):
    """Base class of every error voxflow-io raises on purpose."""


class VolumeNotFoundError(VoxflowIOError, FileNotFoundError):
    """A path that should hold a volume, store or dataset does not exist."""


class UnsupportedFormatError(VoxflowIOError, ValueError):
    """A path exists but is not a format voxflow-io can open."""


class CorruptVolumeError(VoxflowIOError):
    """A file or chunk exists but its bytes cannot be read or decoded (truncated, garbled; a
    folder or named pipe where a TIFF, slice or ``.npy`` file should be)."""


class MetadataError(VoxflowIOError, ValueError):
    """Metadata is missing, malformed or contradicts the array (axes, scales, shapes)."""


class LevelOutOfRangeError(VoxflowIOError, IndexError):
    """A pyramid level was asked for that the multiscale image does not have."""


class WindowError(VoxflowIOError, IndexError):
    """A read or write window is malformed or reaches outside the volume."""


class StoreExistsError(VoxflowIOError, FileExistsError):
    """A writer was asked to create a store where one already exists."""


class DatasetLayoutError(VoxflowIOError, ValueError):
    """An ``images/ labels/ masks/`` dataset folder breaks the layout rules."""


class ParameterError(VoxflowIOError, ValueError):
    """An argument has the wrong type or an invalid value (a problem of the call, not the data)."""


class ImageTooLargeError(VoxflowIOError, ValueError):
    """One unit that must be decoded whole (a slice image, a TIFF strip or tile, a zarr chunk)
    would decode to more bytes than the configured limit (``max_decoded_bytes``)."""


class IncompleteStoreError(VoxflowIOError):
    """An OME-Zarr image is still marked as being written: its writer did not call ``finish``
    (it was killed, failed, or is still running)."""


class ForkedProcessError(VoxflowIOError, RuntimeError):
    """A zarr volume was read in a process forked from one that had already read zarr data:
    tensorstore, voxflow-io's zarr reader, cannot run there (start DataLoader workers with
    ``multiprocessing_context="spawn"`` (or ``"forkserver"``))."""


class FinishedStoreError(VoxflowIOError):
    """A writer was asked to write into (or finish) an OME-Zarr image that is already finished."""


class RemoteStoreError(VoxflowIOError, OSError):
    """An object store (``s3://``, ``gs://``, ``http(s)://``) could not be used: the server is
    down or timed out, refused the credentials, answered with an error, the URL's scheme is
    read-only, or the package that reads the scheme is not installed."""
