"""[Volume][voxflow_io.Volume]: a lazy, picklable window reader over one n-dimensional image."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType, MappingProxyType
from typing import Any, Protocol, TypeAlias

import numpy as np

from ._errors import MetadataError, ParameterError, WindowError
from ._remote import RemoteLocation
from ._validate import int_tuple, is_integer

logger = logging.getLogger(__name__)

Index: TypeAlias = int | slice | EllipsisType | None


class Reader(Protocol):
    """What every format backend provides once opened."""

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        """Read a window given by in-bounds, step-1 slices; returns a new C-ordered array."""
        ...

    def close(self) -> None:
        """Release file handles."""
        ...


@dataclass(frozen=True)
class VolumeInfo:
    """Metadata of an opened volume, known without reading any voxel.

    Attributes:
        shape: Array shape, one entry per axis.
        dtype: Voxel data type.
        axes: One letter per dimension from ``"tczyx"``, e.g. ``"zyx"`` or ``"tczyx"``.
        voxel_size: Physical size of a voxel along each axis (1.0 where unknown or not spatial).
        chunks: Storage chunk (or tile/page) shape, one entry per axis.
        unit: Unit of the spatial voxel sizes (e.g. ``"micrometer"``), or None when unknown.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    voxel_size: tuple[float, ...]
    chunks: tuple[int, ...]
    unit: str | None = None

    def __post_init__(self) -> None:
        ndim = len(self.shape)
        for name in ("axes", "voxel_size", "chunks"):
            if len(getattr(self, name)) != ndim:
                raise MetadataError(
                    f"{name} {getattr(self, name)!r} has {len(getattr(self, name))} entries "
                    f"but the array has {ndim} dimensions (shape {self.shape})"
                )
        if any(not np.isfinite(v) or v <= 0 for v in self.voxel_size):
            raise MetadataError(f"voxel_size {self.voxel_size} must be finite and positive")


#: ``opener(path, options)``: ``path`` is the `Source`'s path, a local `Path` for every opener,
#: or a `RemoteLocation` for the openers that also read object stores (zarr, tensorstore).
Opener: TypeAlias = Callable[[Any, Mapping[str, Any]], tuple[Reader, VolumeInfo]]


@dataclass(frozen=True)
class Source:
    """How to (re)open a volume: a module-level opener function, a path and its options.

    Only this travels when a [Volume][voxflow_io.Volume] is pickled; the file handle is reopened
    on first read in the receiving process.

    Attributes:
        opener: Module-level function that opens ``path`` with ``options``.
        path: Local file or folder, or the `RemoteLocation` (URL and ``storage_options``) of an
            object-store node.
        options: Keyword options of the opener.
        unpicklable: Why this source cannot be reopened in another process (e.g. a tensorstore
            handle over an in-memory store, whose live object then sits in ``options``), or
            None. Such a source opens and reads in this process, but refuses to be pickled.
    """

    opener: Opener
    path: Path | RemoteLocation
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    unpicklable: str | None = None

    def open(self) -> tuple[Reader, VolumeInfo]:
        return self.opener(self.path, self.options)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.unpicklable is not None:
            raise ParameterError(self.unpicklable)
        return (Source, (self.opener, self.path, dict(self.options)))


class Volume:
    """A lazily read n-dimensional image: metadata at open, voxels only on request.

    Build one with [open_volume][voxflow_io.open_volume]. Reads touch only the chunks, tiles,
    pages or slice files that intersect the requested window. A ``Volume`` pickles to its source
    description and reopens its file handle on first use in another process (DataLoader
    workers, DDP ranks).

    Shapes:
        ``read`` / ``__getitem__`` results: ``(*size)`` of ``dtype``, in the order of ``axes``.
    """

    def __init__(self, source: Source, reader: Reader | None, info: VolumeInfo) -> None:
        self._source = source
        self._reader = reader
        self._reader_pid = os.getpid()
        self._info = info

    # -- metadata ------------------------------------------------------------------------
    @property
    def path(self) -> Path | RemoteLocation:
        """File or folder the volume was opened from, or the `RemoteLocation` of an object-store
        node (``str()`` of it is the URL)."""
        return self._source.path

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape, one entry per axis."""
        return self._info.shape

    @property
    def dtype(self) -> np.dtype:
        """Voxel data type; reads return arrays of it."""
        return self._info.dtype

    @property
    def axes(self) -> str:
        """One letter per dimension from ``"tczyx"``."""
        return self._info.axes

    @property
    def voxel_size(self) -> tuple[float, ...]:
        """Physical voxel size per axis (1.0 where unknown or non-spatial)."""
        return self._info.voxel_size

    @property
    def unit(self) -> str | None:
        """Unit of the spatial voxel sizes (e.g. ``"micrometer"``), or None when unknown."""
        return self._info.unit

    @property
    def chunks(self) -> tuple[int, ...]:
        """Storage chunk shape: reads aligned to it touch the fewest bytes."""
        return self._info.chunks

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self._info.shape)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self._info.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array once decoded (``size * dtype.itemsize``)."""
        return self.size * self._info.dtype.itemsize

    def __len__(self) -> int:
        return self._info.shape[0]

    def __repr__(self) -> str:
        return (
            f"Volume({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, "
            f"axes={self.axes!r}, chunks={self.chunks}, voxel_size={self.voxel_size})"
        )

    # -- reading -------------------------------------------------------------------------
    def read(self, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """Read the window ``[start, start + size)``; it must lie inside the volume.

        Args:
            start: First voxel of the window, one non-negative int per axis.
            size: Window extent, one positive int per axis.

        Returns:
            ``(*size)`` array of [dtype][voxflow_io.Volume.dtype], a fresh C-ordered copy.

        Raises:
            WindowError: wrong number of entries, negative start, non-positive size, or a
                window that reaches outside the volume (never a clipped read).
        """
        start_t = _as_int_tuple(start, "start", self)
        size_t = _as_int_tuple(size, "size", self)
        box = []
        for axis, (s, n, dim) in enumerate(zip(start_t, size_t, self.shape, strict=True)):
            if n <= 0 or s < 0 or s + n > dim:
                raise WindowError(
                    f"{self.path}: window start={start_t} size={size_t} reaches outside the "
                    f"volume of shape {self.shape} along axis {axis} ({self.axes[axis]!r}): "
                    f"expected 0 <= start and 0 < size and start + size <= {dim}, "
                    f"found start {s}, size {n}"
                )
            box.append(slice(s, s + n))
        return self._read_box(tuple(box))

    def __getitem__(self, key: Index | tuple[Index, ...]) -> np.ndarray:
        """Numpy-style basic indexing: ints, slices (positive step), ``...`` and ``None``.

        Unlike numpy, a slice bound past the end raises [WindowError][voxflow_io.WindowError]
        instead of being clipped. Integer indices drop their axis as in numpy.
        """
        box, post, squeeze = _parse_index(key, self)
        data = self._read_box(box)
        if any(p.step != 1 for p in post):
            data = np.ascontiguousarray(data[post])
        if squeeze:
            data = data.reshape(squeeze)
        return data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Read the whole volume (explicitly, e.g. through ``np.asarray(volume)``)."""
        data = self._read_box(tuple(slice(0, n) for n in self.shape))
        return data if dtype is None else data.astype(dtype, copy=False)

    def _read_box(self, box: tuple[slice, ...]) -> np.ndarray:
        reader = self._ensure_open()
        logger.debug("%s: read %s", self.path, box)
        return reader.read(box)

    def _ensure_open(self) -> Reader:
        if self._reader is not None and self._reader_pid != os.getpid():
            # Inherited through fork (e.g. DataLoader workers): the handle's file offset is
            # shared with the parent, so reopen instead of racing it. The parent's objects are
            # left alone: closing them here could flush or unmap state the parent still uses.
            self._reader = None
        if self._reader is None:
            reader, info = self._source.open()
            if (info.shape, info.dtype) != (self._info.shape, self._info.dtype):
                reader.close()
                raise MetadataError(
                    f"{self.path}: changed since it was opened: expected shape {self._info.shape} "
                    f"{self._info.dtype}, found {info.shape} {info.dtype}"
                )
            logger.debug("%s: reopened in process %d", self.path, os.getpid())
            self._reader = reader
            self._reader_pid = os.getpid()
        return self._reader

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Release the file handle; a later read reopens it."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self._source, "info": self._info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._source = state["source"]
        self._info = state["info"]
        self._reader = None
        self._reader_pid = os.getpid()


def _as_int_tuple(values: Sequence[int], name: str, volume: Volume) -> tuple[int, ...]:
    return int_tuple(
        values, name, str(volume.path), WindowError, length=volume.ndim, axes=volume.axes
    )


def _parse_index(
    key: Index | tuple[Index, ...], volume: Volume
) -> tuple[tuple[slice, ...], tuple[slice, ...], tuple[int, ...] | None]:
    """Turn a basic numpy index into (read box, strided post-slice, final shape or None)."""
    items = key if isinstance(key, tuple) else (key,)
    n_ellipsis = sum(item is Ellipsis for item in items)
    if n_ellipsis > 1:
        raise WindowError(f"{volume.path}: an index can only have a single ellipsis")
    n_real = sum(item is not Ellipsis and item is not None for item in items)
    if n_real > volume.ndim:
        raise WindowError(
            f"{volume.path}: too many indices ({n_real}) for a volume with {volume.ndim} "
            f"dimensions (axes {volume.axes!r})"
        )
    expanded: list[Index] = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (volume.ndim - n_real))
        else:
            expanded.append(item)
    if n_ellipsis == 0:
        expanded.extend([slice(None)] * (volume.ndim - n_real))

    box: list[slice] = []
    post: list[slice] = []
    out_shape: list[int] = []
    reshape = False
    axis = 0
    for item in expanded:
        if item is None:
            out_shape.append(1)
            reshape = True
            continue
        dim = volume.shape[axis]
        if is_integer(item):
            index = int(item) + dim if item < 0 else int(item)
            if not 0 <= index < dim:
                raise WindowError(
                    f"{volume.path}: index {item} is outside axis {axis} "
                    f"({volume.axes[axis]!r}) of size {dim}"
                )
            box.append(slice(index, index + 1))
            post.append(slice(None, None, 1))
            reshape = True
        elif isinstance(item, slice):
            start, stop, step = _checked_slice(item, dim, axis, volume)
            box.append(slice(start, stop))
            post.append(slice(None, None, step))
            out_shape.append(len(range(start, stop, step)))
        else:
            raise WindowError(
                f"{volume.path}: only basic indexing (ints, slices, ..., None) is supported, "
                f"found {type(item).__name__} {item!r} for axis {axis}; read a window and index "
                f"the numpy array for fancy indexing"
            )
        axis += 1
    return tuple(box), tuple(post), tuple(out_shape) if reshape else None


def _checked_slice(item: slice, dim: int, axis: int, volume: Volume) -> tuple[int, int, int]:
    for part in (item.start, item.stop, item.step):
        if part is not None and not is_integer(part):
            raise WindowError(
                f"{volume.path}: slice {item} on axis {axis} ({volume.axes[axis]!r}) must have "
                f"integer bounds and step, found {part!r} ({type(part).__name__})"
            )
    step = 1 if item.step is None else int(item.step)
    if step <= 0:
        raise WindowError(
            f"{volume.path}: slice step must be positive, found {step} on axis {axis}"
        )
    bounds = []
    for value, default in ((item.start, 0), (item.stop, dim)):
        if value is None:
            bounds.append(default)
            continue
        resolved = int(value) + dim if value < 0 else int(value)
        if not 0 <= resolved <= dim:
            raise WindowError(
                f"{volume.path}: slice {item} reaches outside axis {axis} ({volume.axes[axis]!r}) "
                f"of size {dim}; voxflow never clips a window silently"
            )
        bounds.append(resolved)
    start, stop = bounds
    if stop <= start:
        raise WindowError(f"{volume.path}: slice {item} on axis {axis} selects no voxels")
    return start, stop, step
