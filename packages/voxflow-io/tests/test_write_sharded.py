"""Sharded Zarr v3 OME-Zarr writing: one object per shard, shard-aligned concurrent writers,
valid NGFF (ome-zarr-models), refusals before anything is written, and byte-range reads of one
shard object through a moto S3 server on 127.0.0.1. Every read is checked against numpy."""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from voxflow_io import (
    MetadataError,
    OmeZarrWriter,
    WindowError,
    create_ome_zarr,
    create_plate,
    open_volume,
)

from .conftest import ramp
from .remote_servers import BUCKET, S3Server
from .test_write import validate_image

#: Deliberately not a multiple of the shards on z and x (edge shards are partial).
SHAPE = (36, 40, 44)
CHUNKS = (4, 8, 8)
SHARDS = (8, 16, 32)


def _grid(shape: tuple[int, ...], block: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Corners of the ``block`` grid over ``shape``, in C order."""
    return list(itertools.product(*(range(0, n, b) for n, b in zip(shape, block, strict=True))))


def _objects(array_folder: Path) -> list[str]:
    """Keys of the chunk/shard objects of one array folder (relative, ``/``-separated)."""
    return sorted(
        p.relative_to(array_folder).as_posix() for p in array_folder.rglob("*") if p.is_file()
    )


def _mean_2x(data: np.ndarray) -> np.ndarray:
    """Independent 2x2x2 block mean of an even-shaped array (float64)."""
    z, y, x = (n // 2 for n in data.shape)
    return data.astype(np.float64).reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5))


def test_two_processes_write_one_sharded_image(tmp_path: Path) -> None:
    path = tmp_path / "sharded.ome.zarr"
    reference = ramp(SHAPE)
    writer = create_ome_zarr(
        path,
        shape=SHAPE,
        dtype="uint16",
        chunks=CHUNKS,
        shards=SHARDS,
        axes="zyx",
        levels=2,
    )
    assert writer.chunks == CHUNKS
    assert writer.shards == SHARDS
    assert writer.write_chunks == SHARDS
    # Level 1 (18, 20, 22): shards clipped to the shape rounded up to whole chunks.
    assert writer.write_chunks_of(1) == (8, 16, 24)
    # Two spawned processes, each given disjoint shard-aligned blocks (the library's own
    # method is mapped: pytest's importlib mode gives this module an unimportable name).
    jobs = [
        (
            writer,
            corner,
            reference[tuple(slice(c, c + s) for c, s in zip(corner, SHARDS, strict=True))],
        )
        for corner in _grid(SHAPE, SHARDS)
    ]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.starmap(OmeZarrWriter.write_region, jobs, chunksize=1)
    writer.build_pyramid()
    writer.finish()

    np.testing.assert_array_equal(open_volume(path)[:], reference)
    np.testing.assert_array_equal(open_volume(path)[3:29, 7:33, 5:43], reference[3:29, 7:33, 5:43])
    level0 = zarr.open_array(str(path / "0"), mode="r")
    assert level0.shards == SHARDS
    assert level0.chunks == CHUNKS
    np.testing.assert_array_equal(level0[:], reference)
    level1 = np.asarray(open_volume(path, level=1))
    np.testing.assert_allclose(level1, _mean_2x(reference), atol=0.5 + 1e-9)
    validate_image(path, "0.5")

    # One object per shard (5 x 3 x 2), not one per chunk (9 x 5 x 6).
    expected = {f"c/{z // 8}/{y // 16}/{x // 32}" for z, y, x in _grid(SHAPE, SHARDS)}
    assert _objects(path / "0") == sorted({*expected, "zarr.json"})
    assert len(expected) == 30
    assert len(_grid(SHAPE, CHUNKS)) == 270


def test_misaligned_region_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "sharded.ome.zarr"
    writer = create_ome_zarr(
        path, shape=SHAPE, dtype="uint16", chunks=CHUNKS, shards=SHARDS, axes="zyx"
    )
    # Aligned to the chunks, not to the shards: a partial shard would be read-modify-written.
    block = np.ones((4, 16, 32), np.uint16)
    with pytest.raises(WindowError, match=r"start \(4, 0, 0\).*shards \(8, 16, 32\).*axis 0"):
        writer.write_region((4, 0, 0), block)
    with pytest.raises(WindowError, match=r"shards \(8, 16, 32\).*axis 2 \('x'\)"):
        writer.write_region((0, 0, 8), np.ones((8, 16, 24), np.uint16))
    assert _objects(path / "0") == ["zarr.json"]
    # A block ending at the image's end is aligned (the partial edge shard is whole).
    writer.write_region((32, 32, 32), np.full((4, 8, 12), 7, np.uint16))
    assert _objects(path / "0") == ["c/4/2/1", "zarr.json"]


def test_unsharded_writer_keeps_chunk_alignment(tmp_path: Path) -> None:
    writer = create_ome_zarr(
        tmp_path / "v2.ome.zarr",
        shape=(8, 8),
        dtype="uint8",
        chunks=(4, 4),
        axes="yx",
        ngff_version="0.4",
    )
    assert writer.shards is None
    assert writer.write_chunks == (4, 4)
    writer.write_region((4, 0), np.ones((4, 8), np.uint8))
    with pytest.raises(WindowError, match=r"chunks \(4, 4\)"):
        writer.write_region((2, 0), np.ones((2, 8), np.uint8))


def test_shards_with_ngff_04_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v2.ome.zarr"
    with pytest.raises(MetadataError, match=r"shards .*ngff_version '0\.5'.*zarr v2"):
        create_ome_zarr(
            path,
            shape=SHAPE,
            dtype="uint16",
            chunks=CHUNKS,
            shards=SHARDS,
            axes="zyx",
            ngff_version="0.4",
        )
    assert not path.exists()


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ((8, 12, 32), r"multiple of chunks \(4, 8, 8\).*axis 1 \('y'\) has shard 12 and chunk 8"),
        ((8, 16), r"shards must be 3 integers"),
        ((8, 16, 0), r">= 1"),
        ((8, 16, 32.5), r"must hold integers"),
    ],
)
def test_malformed_shards_are_refused(tmp_path: Path, shards: Any, message: str) -> None:
    path = tmp_path / "bad.ome.zarr"
    with pytest.raises(MetadataError, match=message):
        create_ome_zarr(path, shape=SHAPE, dtype="uint16", chunks=CHUNKS, shards=shards, axes="zyx")
    assert not path.exists()


def test_sharded_plate_fields(tmp_path: Path) -> None:
    path = tmp_path / "plate.ome.zarr"
    plate = create_plate(
        path,
        wells=["A/1"],
        fields=1,
        shape=(1, 2, 4, 16, 16),
        dtype="uint16",
        chunks=(1, 1, 2, 8, 8),
        shards=(1, 2, 4, 16, 16),
        channel_names=["DAPI", "GFP"],
    )
    field = ramp((1, 2, 4, 16, 16))
    with plate.position("A/1").writer() as writer:
        assert writer.write_chunks == (1, 2, 4, 16, 16)
        writer.write_region((0,) * 5, field)
    np.testing.assert_array_equal(plate.position("A/1").open()[:], field)
    assert _objects(path / "A" / "1" / "0" / "0") == ["c/0/0/0/0/0", "zarr.json"]


class RequestLog:
    """Wraps the WSGI app of a moto server: records every request's method, path, ``Range``
    header and the number of body bytes sent back (independent of voxflow and zarr)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        entry = {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "range": environ.get("HTTP_RANGE"),
            "bytes": 0,
        }
        self.requests.append(entry)

        def body() -> Iterator[bytes]:
            for piece in self.app(environ, start_response):
                entry["bytes"] += len(piece)
                yield piece

        return body()


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[S3Server, RequestLog]]:
    server = S3Server()
    wsgi = server._server._server  # moto's werkzeug server: log what it serves
    assert wsgi is not None
    log = RequestLog(wsgi.app)
    wsgi.app = log
    yield server, log
    server.stop()


def test_sharded_image_on_s3_round_trips_and_reads_byte_ranges(
    s3: tuple[S3Server, RequestLog],
) -> None:
    server, log = s3
    options = server.storage_options
    url = server.url("sharded.ome.zarr")
    shape, chunks, shards = (32, 64, 64), (16, 16, 16), (32, 64, 64)
    reference = ramp(shape)
    writer = create_ome_zarr(
        url,
        shape=shape,
        dtype="uint16",
        chunks=chunks,
        shards=shards,
        axes="zyx",
        compressor="none",
        storage_options=options,
    )
    assert writer.write_chunks == shards
    with pytest.raises(WindowError, match=r"shards \(32, 64, 64\)"):
        writer.write_region((0, 0, 0), reference[:16])
    writer.write_region((0, 0, 0), reference)
    writer.finish()
    shard_key = f"/{BUCKET}/sharded.ome.zarr/0/c/0/0/0"
    puts = [r["path"] for r in log.requests if r["method"] == "PUT" and "/c/" in r["path"]]
    assert puts == [shard_key]  # the one shard, as one object

    volume = open_volume(url, storage_options=options)
    volume[0, 0, 0]  # this process's tensorstore handle opens (it reads 0/zarr.json)
    log.requests.clear()
    window = volume[2:10, 3:12, 40:50]  # touches 2 of the 64 inner chunks
    np.testing.assert_array_equal(window, reference[2:10, 3:12, 40:50])
    gets = [r for r in log.requests if r["method"] == "GET"]
    assert gets, "the window read fetched nothing"
    assert {r["path"] for r in gets} == {shard_key}
    assert all(r["range"] is not None for r in gets), gets  # byte ranges, never the whole shard
    shard_bytes = reference.nbytes  # uncompressed: the shard object is at least this big
    fetched = sum(r["bytes"] for r in gets)
    # 2 chunks of 16^3 uint16 (8 KiB each) plus the shard index (64 x 16 bytes + crc32c).
    assert fetched <= 2 * 16**3 * 2 + 64 * 16 + 4, gets
    assert fetched < shard_bytes / 8

    np.testing.assert_array_equal(np.asarray(volume), reference)
    store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
    direct = zarr.open_array(store, path="0", mode="r")
    assert direct.shards == shards
    np.testing.assert_array_equal(direct[:], reference)
