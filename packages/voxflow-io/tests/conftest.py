"""Synthetic volumes for voxflow-io tests, written with the formats' own libraries."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile
import zarr


def ramp(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    """Deterministic data in which every voxel differs from its neighbours."""
    rng = np.random.default_rng(sum(shape))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    high = min(int(info.max), 60000) if info else 1000
    return rng.integers(0, high, size=shape).astype(dtype)


@pytest.fixture(scope="session")
def volume_data() -> np.ndarray:
    """(20, 50, 70) uint16: deliberately not a multiple of any chunk shape used below."""
    return ramp((20, 50, 70))


class OpenCounter:
    """Counts files opened under a folder, via CPython's audit hook (independent of voxflow)."""

    active: ClassVar[list[OpenCounter]] = []
    installed: ClassVar[bool] = False

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)
        self.paths: list[str] = []

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if event == "open" and cls.active and isinstance(args[0], (str, Path)):
            for counter in cls.active:
                if str(args[0]).startswith(counter.folder):
                    counter.paths.append(str(args[0]))

    def __enter__(self) -> OpenCounter:
        if not OpenCounter.installed:
            sys.addaudithook(OpenCounter._hook)
            OpenCounter.installed = True
        OpenCounter.active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        OpenCounter.active.remove(self)


@pytest.fixture
def count_opens() -> type[OpenCounter]:
    return OpenCounter


class KvstoreReads:
    """tensorstore's own counters of one kvstore driver (``file``, ``s3``, ``http``): the reads
    (whole objects or byte ranges) and bytes read between ``__enter__`` and ``__exit__``."""

    def __init__(self, driver: str) -> None:
        self.prefix = f"/tensorstore/kvstore/{driver}/"
        self.reads = 0
        self.bytes = 0

    def _counters(self) -> tuple[int, int]:
        import tensorstore as ts

        values = {
            metric["name"].rsplit("/", 1)[-1]: metric["values"][0].get("value", 0)
            for metric in ts.experimental_collect_matching_metrics(self.prefix)
        }
        return int(values.get("read", 0)), int(values.get("bytes_read", 0))

    def __enter__(self) -> KvstoreReads:
        self._start = self._counters()
        return self

    def __exit__(self, *exc: object) -> None:
        reads, nbytes = self._counters()
        self.reads, self.bytes = reads - self._start[0], nbytes - self._start[1]


@pytest.fixture
def kvstore_reads() -> type[KvstoreReads]:
    return KvstoreReads


@pytest.fixture(params=[2, 3], ids=["zarr-v2", "zarr-v3"])
def zarr_array_path(
    request: pytest.FixtureRequest, tmp_path: Path, volume_data: np.ndarray
) -> Path:
    path = tmp_path / f"array-v{request.param}.zarr"
    array = zarr.create_array(
        str(path),
        shape=volume_data.shape,
        chunks=(8, 16, 32),
        dtype=volume_data.dtype,
        zarr_format=request.param,
    )
    array[:] = volume_data
    return path


@pytest.fixture
def tiff_stack(tmp_path: Path, volume_data: np.ndarray) -> Path:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, volume_data)
    return path


@pytest.fixture
def fails_within_20s() -> Iterator[None]:
    """Turn a hang (e.g. opening a named pipe) into a test failure instead of a stuck run."""
    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs SIGALRM")

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("blocked for 20 s: voxflow-io opened something that never answers")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
