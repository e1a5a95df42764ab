"""Reading chunk files of local, unsharded zarr arrays directly (the fast read path).

Measured on 128^3 windows of a 64^3-chunked uint16 store (docs/benchmarks.md), this reader
spends 0.6-1.7x the codec's decode time, zarr-python's asyncio pipeline 2-6x.
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import zlib
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from numcodecs.abc import Codec
from zarr.storage import LocalStore

from ._errors import CorruptVolumeError, VolumeNotFoundError
from ._files import OPEN_FLAGS, file_kind
from ._threads import run_all


def node_folder(node: zarr.Array | zarr.Group) -> Path:
    """Folder of a node of a local store (for messages and direct file access)."""
    if isinstance(node.store, LocalStore):
        root = Path(node.store.root)
        return root / node.path if node.path else root
    return Path(str(node.store_path))


class ChunkFileReader:
    """Reads chunk files of a local store directly and decodes them on a thread pool.

    Every chunk must decode to exactly its size: the decoded size is taken from the zstd or
    blosc header before decoding into the reused buffer, or, for codecs that do not record it
    (gzip, other numcodecs compressors of zarr v2), checked on the decoded bytes. A chunk file
    that does not exist holds the fill value, but only while the array's metadata document is
    still there: a store deleted after opening is an error, not an array of fill values.

    ``stored`` is the dtype of the chunk bytes, in their stored byte order (``<u2`` or ``>u2``);
    windows come back in native byte order (big-endian chunks are swapped while copied into
    the window).
    """

    def __init__(
        self, array: zarr.Array, decoder: Codec | None, where: str, stored: np.dtype
    ) -> None:
        self._where = where
        self._root = node_folder(array)
        self._metadata = array.metadata
        self._metadata_file = self._root / (
            "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
        )
        self._chunks = tuple(int(c) for c in array.chunks)
        self._stored = stored
        self._dtype = stored.newbyteorder("=")
        self._fill = array.fill_value if array.fill_value is not None else 0
        self._decoder = decoder
        self._local = threading.local()

    def _buffers(self, nbytes: int) -> tuple[np.ndarray, memoryview]:
        """This thread's decoded-chunk buffer and a raw buffer of at least ``nbytes``."""
        local = self._local
        if getattr(local, "chunk", None) is None:
            local.chunk = np.empty(self._chunks, self._stored)
            local.raw = bytearray(0)
        if len(local.raw) < nbytes:
            local.raw = bytearray(max(nbytes, local.chunk.nbytes + 1024))
        return local.chunk, memoryview(local.raw)[:nbytes]

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        out = np.empty(tuple(s.stop - s.start for s in box), self._dtype)
        ranges = [
            range(s.start // c, (s.stop - 1) // c + 1)
            for s, c in zip(box, self._chunks, strict=True)
        ]
        missing: list[tuple[int, ...]] = []
        run_all(
            lambda index: self._read_chunk(index, box, out, missing), itertools.product(*ranges)
        )
        if missing:
            self._check_store_exists(missing)
        return out

    def _check_store_exists(self, missing: list[tuple[int, ...]]) -> None:
        """Absent chunks hold the fill value only in a store that still exists."""
        if not os.path.isfile(self._metadata_file):
            shown = ", ".join(str(i) for i in sorted(missing)[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise VolumeNotFoundError(
                f"{self._where}: chunk(s) {shown}{more} missing and so is the array metadata "
                f"{self._metadata_file}: the store was deleted or moved after it was opened "
                f"(only a store that still exists reads missing chunks as the fill value)"
            )

    def _read_chunk(
        self,
        index: tuple[int, ...],
        box: tuple[slice, ...],
        out: np.ndarray,
        missing: list[tuple[int, ...]],
    ) -> None:
        chunk_sel, out_sel = [], []
        for i, s, c in zip(index, box, self._chunks, strict=True):
            lo, hi = max(s.start, i * c), min(s.stop, (i + 1) * c)
            chunk_sel.append(slice(lo - i * c, hi - i * c))
            out_sel.append(slice(lo - s.start, hi - s.start))
        path = self._root / self._metadata.encode_chunk_key(index)
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            missing.append(index)  # checked once per read: does the store still exist?
            out[tuple(out_sel)] = self._fill  # an absent chunk holds the fill value (zarr spec)
            return
        except OSError as exc:
            raise CorruptVolumeError(
                f"{path}: chunk {index} of {self._where} cannot be opened: {exc}"
            ) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CorruptVolumeError(
                    f"{path}: chunk {index} of {self._where} is {file_kind(info.st_mode)}, "
                    f"expected a regular chunk file"
                )
            size = info.st_size
            chunk, data = self._buffers(size)
            got = os.readv(fd, [data])
        except OSError as exc:
            raise CorruptVolumeError(
                f"{path}: chunk {index} of {self._where} cannot be read: {exc}"
            ) from exc
        finally:
            os.close(fd)
        if got != size:
            raise CorruptVolumeError(f"{path}: read {got} of {size} bytes of chunk {index}")
        out[tuple(out_sel)] = self._decode(path, index, data, chunk)[tuple(chunk_sel)]

    def _decode(
        self, path: Path, index: tuple[int, ...], data: memoryview, chunk: np.ndarray
    ) -> np.ndarray:
        """Decode one chunk's bytes; anything but exactly ``chunk.nbytes`` bytes is an error."""
        expected = f"{chunk.nbytes} bytes ({self._chunks} of {self._stored})"
        if self._decoder is None:
            if len(data) != chunk.nbytes:
                raise CorruptVolumeError(
                    f"{path}: uncompressed chunk {index} of {self._where} has {len(data)} bytes, "
                    f"expected {expected}"
                )
            return np.frombuffer(data, self._stored).reshape(self._chunks)
        found = _decoded_nbytes(self._decoder, data)
        if found is not None and found != chunk.nbytes:
            raise CorruptVolumeError(
                f"{path}: chunk {index} of {self._where} decodes to {found} bytes, expected "
                f"{expected}"
            )
        try:
            if found is not None:
                self._decoder.decode(data, out=chunk)
                return chunk
            # The codec records no size (gzip, zlib, ...): decoding into the buffer would leave
            # the previous chunk's voxels behind a short chunk, so decode, then count.
            decoded = np.frombuffer(self._decoder.decode(data), np.uint8)
        except (RuntimeError, ValueError, TypeError, EOFError, OSError, zlib.error) as exc:
            raise CorruptVolumeError(
                f"{path}: chunk {index} of {self._where} cannot be decoded with "
                f"{self._decoder!r} (expected {expected}): {type(exc).__name__}: {exc}"
            ) from exc
        if decoded.nbytes != chunk.nbytes:
            raise CorruptVolumeError(
                f"{path}: chunk {index} of {self._where} decodes to {decoded.nbytes} bytes, "
                f"expected {expected}"
            )
        return decoded.view(self._stored).reshape(self._chunks)

    def close(self) -> None:
        """Nothing stays open between reads."""


def _decoded_nbytes(codec: Codec, data: bytes | memoryview) -> int | None:
    """Decoded size recorded in a zstd frame or blosc header, or None if not recorded.

    numcodecs decodes into a larger ``out`` buffer without complaint, so a chunk that holds
    too few bytes would leave stale voxels behind; the headers say the true size up front.
    Layouts: zstd frame header (RFC 8878, section 3.1.1.1); blosc header bytes 4-8.
    """
    if isinstance(codec, numcodecs.Blosc):
        return int.from_bytes(data[4:8], "little") if len(data) >= 16 else -1
    if not isinstance(codec, numcodecs.Zstd):
        return None
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return -1
    descriptor = data[4]
    single_segment = bool(descriptor & 0x20)
    offset = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x03]
    size_bytes = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    if size_bytes == 0 or len(data) < offset + size_bytes:
        return None
    size = int.from_bytes(data[offset : offset + size_bytes], "little")
    return size + 256 if size_bytes == 2 else size
