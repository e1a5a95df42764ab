"""Zarr and OME-Zarr through object stores: a moto S3 server and an HTTP file server, both on
127.0.0.1 and started here. Every read is checked against the numpy source."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import zarr

from voxflow_io import (
    CorruptVolumeError,
    ForkedProcessError,
    IncompleteStoreError,
    OmeZarrWriter,
    ParameterError,
    RemoteStoreError,
    StoreExistsError,
    UnsupportedFormatError,
    Volume,
    VolumeNotFoundError,
    create_ome_zarr,
    create_plate,
    open_plate,
    open_volume,
)

from .conftest import ramp
from .remote_servers import (
    S3_SECRET,
    AuthS3Server,
    FileServer,
    S3Server,
    free_port,
    silent_port,
)

SHAPE = (20, 50, 70)
CHUNKS = (8, 16, 32)
#: Failing against a dead server must take less than this many seconds.
DEAD_SERVER_SECONDS = 15


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    server = FileServer(tmp_path_factory.mktemp("served"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def reference() -> np.ndarray:
    """(20, 50, 70) uint16, not a multiple of the (8, 16, 32) chunks on any axis."""
    return ramp(SHAPE)


def _write_blocks(writer: OmeZarrWriter, data: np.ndarray, z_blocks: range) -> None:
    """Write ``data`` in chunk-aligned slabs of whole z chunks (only those in ``z_blocks``)."""
    for index in z_blocks:
        z = index * CHUNKS[0]
        writer.write_region((z, 0, 0), np.ascontiguousarray(data[z : z + CHUNKS[0]]))


def _image(url: str, data: np.ndarray, options: dict[str, Any]) -> None:
    """An OME-Zarr image of ``data`` (SHAPE, CHUNKS, zyx) at ``url``, finished."""
    with create_ome_zarr(
        url, shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx", storage_options=options
    ) as writer:
        _write_blocks(writer, data, range(3))


def _mean_2x(data: np.ndarray) -> np.ndarray:
    """Independent 2x2x2 block mean of an even-shaped array (float64)."""
    z, y, x = (n // 2 for n in data.shape)
    return data.astype(np.float64).reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5))


@pytest.mark.parametrize(("ngff_version", "levels"), [("0.5", 2), ("0.4", 1)])
def test_s3_write_then_read_matches_numpy(
    s3: S3Server, reference: np.ndarray, ngff_version: str, levels: int
) -> None:
    url = s3.url(f"round-trip-{ngff_version}.ome.zarr")
    options = s3.storage_options
    writer = create_ome_zarr(
        url,
        shape=SHAPE,
        dtype="uint16",
        chunks=CHUNKS,
        axes="zyx",
        voxel_size=(2.0, 0.5, 0.5),
        unit="micrometer",
        ngff_version=ngff_version,  # type: ignore[arg-type]
        levels=levels,
        storage_options=options,
    )
    n_blocks = -(-SHAPE[0] // CHUNKS[0])
    _write_blocks(writer, reference, range(0, 1))
    # Unfinished: refused, unless allow_incomplete (e.g. to resume).
    with pytest.raises(IncompleteStoreError, match="marked incomplete"):
        open_volume(url, storage_options=options)
    # Resume in "another process": a writer re-opened from the URL, sent through pickle.
    resumed = pickle.loads(pickle.dumps(OmeZarrWriter(url, storage_options=options)))
    _write_blocks(resumed, reference, range(1, n_blocks))
    if levels > 1:
        resumed.build_pyramid()
    resumed.finish()

    volume = open_volume(url, storage_options=options)
    assert volume.shape == SHAPE
    assert volume.dtype == np.uint16
    assert volume.axes == "zyx"
    assert volume.voxel_size == (2.0, 0.5, 0.5)
    assert volume.unit == "micrometer"
    np.testing.assert_array_equal(np.asarray(volume), reference)
    np.testing.assert_array_equal(volume[3:17, 5:41, 30:69], reference[3:17, 5:41, 30:69])
    if levels > 1:
        level1 = np.asarray(open_volume(url, storage_options=options, level=1))
        np.testing.assert_allclose(level1, _mean_2x(reference), atol=0.5 + 1e-9)
    # An independent reader (zarr-python on its own fsspec store) sees the same voxels.
    store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
    np.testing.assert_array_equal(zarr.open_array(store, path="0", mode="r")[:], reference)


def test_s3_create_refuses_existing_and_overwrites(s3: S3Server, reference: np.ndarray) -> None:
    url = s3.url("overwrite.ome.zarr")
    options = s3.storage_options
    kwargs = {"shape": SHAPE, "dtype": "uint16", "chunks": CHUNKS, "axes": "zyx"}
    with create_ome_zarr(url, **kwargs, storage_options=options) as writer:  # type: ignore[arg-type]
        _write_blocks(writer, reference, range(3))
    with pytest.raises(StoreExistsError, match=re.escape(url)):
        create_ome_zarr(url, **kwargs, storage_options=options)  # type: ignore[arg-type]
    # Replacing: the old chunks must not show through the new, still empty, image.
    with create_ome_zarr(url, **kwargs, overwrite=True, storage_options=options):  # type: ignore[arg-type]
        pass
    assert not np.asarray(open_volume(url, storage_options=options)).any()


def test_http_reads_local_stores_lazily(
    served: FileServer, reference: np.ndarray, tmp_path: Path
) -> None:
    for version in ("0.5", "0.4"):
        name = f"served-{version}.ome.zarr"
        with create_ome_zarr(
            served.folder / name,
            shape=SHAPE,
            dtype="uint16",
            chunks=CHUNKS,
            axes="zyx",
            ngff_version=version,  # type: ignore[arg-type]
        ) as writer:
            _write_blocks(writer, reference, range(3))
        served.requests.clear()
        volume = open_volume(served.url(name))
        assert served.chunk_gets() == [], "opening must read metadata only"
        # One chunk: (8:16, 16:32, 32:64) is chunk (1, 1, 1) and nothing else.
        window = volume.read((8, 16, 32), (8, 16, 32))
        np.testing.assert_array_equal(window, reference[8:16, 16:32, 32:64])
        expected = f"/{name}/0/c/1/1/1" if version == "0.5" else f"/{name}/0/1/1/1"
        assert served.chunk_gets() == [expected]
        np.testing.assert_array_equal(np.asarray(volume), reference)


def test_http_plate_and_s3_plate(
    served: FileServer, s3: S3Server, tmp_path: Path, reference: np.ndarray
) -> None:
    shape = (1, 2, 4, 10, 12)
    chunks = (1, 1, 4, 8, 8)
    images = {
        (well, field): ramp(shape) + np.uint16(index)
        for index, (well, field) in enumerate((w, "0") for w in ("A/1", "B/2"))
    }
    local = served.folder / "plate.ome.zarr"
    remote = s3.url("plate.ome.zarr")
    for target, options in ((local, None), (remote, s3.storage_options)):
        create_plate(
            target,
            wells=["A/1", "B/2"],
            fields=1,
            shape=shape,
            dtype="uint16",
            chunks=chunks,
            channel_names=["dna", "membrane"],
            storage_options=options,
        )
        plate = open_plate(target, storage_options=options)
        for position in plate.positions():
            with position.writer() as writer:
                for t in range(shape[0]):
                    for c in range(shape[1]):
                        data = images[(position.well, position.field)][t : t + 1, c : c + 1]
                        writer.write_region((t, c, 0, 0, 0), np.ascontiguousarray(data))
    for url, options in ((served.url("plate.ome.zarr"), None), (remote, s3.storage_options)):
        plate = open_plate(url, storage_options=options)
        assert plate.wells == ["A/1", "B/2"]
        seen = {}
        for position in plate.positions():
            assert position.channel_names == ("dna", "membrane")
            assert S3_SECRET not in repr(position)
            seen[(position.well, position.field)] = np.asarray(position.open())
        assert seen.keys() == images.keys()
        for key, data in images.items():
            np.testing.assert_array_equal(seen[key], data)


def _read_window(volume: Volume) -> np.ndarray:
    return volume.read((1, 2, 3), (9, 20, 40))


def test_pickled_and_forked_volumes_reopen_the_store(s3: S3Server, reference: np.ndarray) -> None:
    url = s3.url("pickle.ome.zarr")
    options = s3.storage_options
    with create_ome_zarr(
        url, shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx", storage_options=options
    ) as writer:
        _write_blocks(writer, reference, range(3))
    volume = open_volume(url, storage_options=options)
    expected = reference[1:10, 2:22, 3:43]
    np.testing.assert_array_equal(_read_window(volume), expected)  # store opened before pickling
    assert S3_SECRET not in repr(volume)
    assert url in repr(volume)
    clone = pickle.loads(pickle.dumps(volume))
    assert str(clone.path) == url
    assert clone.shape == SHAPE
    np.testing.assert_array_equal(_read_window(clone), expected)
    # This process read through tensorstore: a forked worker is refused, not aborted
    # (test_workers.py reads in forked workers of a parent that had not read yet).
    if sys.platform == "linux":
        with (
            multiprocessing.get_context("fork").Pool(1) as pool,
            pytest.raises(ForkedProcessError, match="forked from process"),
        ):
            pool.apply_async(_read_window, (volume,)).get(timeout=60)


def test_aws_environment_variables_replace_storage_options(
    s3: S3Server, reference: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = s3.url("environment.ome.zarr")
    _image(url, reference, s3.storage_options)
    options = s3.storage_options
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    np.testing.assert_array_equal(np.asarray(open_volume(url)), reference)


def test_missing_bucket_store_and_array_name_the_url(s3: S3Server, served: FileServer) -> None:
    options = s3.storage_options
    url = "s3://no-such-bucket-here/x.ome.zarr"
    with pytest.raises(
        VolumeNotFoundError, match=re.escape(url) + ".*bucket 'no-such-bucket-here' does not"
    ):
        open_volume(url, storage_options=options)
    url = s3.url("never-written.zarr")
    with pytest.raises(VolumeNotFoundError, match=re.escape(f"{url}: no zarr array or group")):
        open_volume(url, storage_options=options)
    zarr.create_array(
        zarr.storage.FsspecStore.from_url(s3.url("group.zarr"), storage_options=options),
        name="present",
        shape=(4, 4),
        dtype="uint8",
    )
    with pytest.raises(VolumeNotFoundError, match=r"group\.zarr.*key 'absent'"):
        open_volume(s3.url("group.zarr"), key="absent", storage_options=options)
    with pytest.raises(VolumeNotFoundError, match=re.escape(served.url("nothing.zarr"))):
        open_volume(served.url("nothing.zarr"))


def test_refusals_name_the_url(served: FileServer, s3: S3Server, tmp_path: Path) -> None:
    url = served.url("written-over-http.ome.zarr")
    served.requests.clear()
    with pytest.raises(RemoteStoreError, match=re.escape(f"{url}: http:// is read-only")):
        create_ome_zarr(url, shape=(4, 4), dtype="uint8", chunks=(4, 4), axes="yx")
    assert served.requests == []
    assert not (served.folder / "written-over-http.ome.zarr").exists()
    with pytest.raises(RemoteStoreError, match="read-only"):
        OmeZarrWriter(url)
    forbidden = served.url("forbidden/x.zarr")
    with pytest.raises(RemoteStoreError, match=re.escape(forbidden) + ": .*403"):
        open_volume(forbidden)
    with pytest.raises(ParameterError, match="storage_options apply to object-store URLs"):
        open_volume(tmp_path, storage_options={"anon": True})
    with pytest.raises(UnsupportedFormatError, match="unsupported URL scheme 'ftp'"):
        open_volume("ftp://host/x.zarr")
    with pytest.raises(UnsupportedFormatError, match="only zarr stores open from URLs"):
        open_volume(s3.url("scan.tif"), storage_options=s3.storage_options)


def test_options_tensorstore_cannot_apply_are_refused_not_dropped(s3: S3Server) -> None:
    """Voxels read with other credentials than the metadata would be wrong silently."""
    for url, options, named in (
        ("gs://bucket/x.zarr", {"token": "/secret/service-account.json"}, "token"),
        ("http://127.0.0.1:1/x.zarr", {"client_kwargs": {"auth": "user:pw"}}, "auth"),
        (s3.url("x.zarr"), {"endpoint_url": s3.endpoint, "token": "t"}, "token without key"),
        (s3.url("x.zarr"), {"endpoint_url": s3.endpoint, "key": "k"}, "key without secret"),
        (s3.url("x.zarr"), {**s3.storage_options, "use_ssl": False}, "use_ssl"),
    ):
        with pytest.raises(ParameterError, match=re.escape(named)) as caught:
            open_volume(url, storage_options=options)
        assert url in str(caught.value)
        assert "/secret/service-account.json" not in str(caught.value)


def test_s3_secrets_are_not_left_on_disk(s3: S3Server, reference: np.ndarray) -> None:
    """tensorstore reads S3 keys from profile files: they exist only while a handle opens."""
    url = s3.url("secrets.ome.zarr")
    _image(url, reference, s3.storage_options)
    folders = set(Path(tempfile.gettempdir()).glob("voxflow-io-aws-*"))
    volume = open_volume(url, storage_options=s3.storage_options)
    np.testing.assert_array_equal(volume.read((1, 2, 3), (4, 5, 6)), reference[1:5, 2:7, 3:9])
    left = set(Path(tempfile.gettempdir()).glob("voxflow-io-aws-*")) - folders
    assert not left, f"credential files left behind: {left}"


def test_remote_damage_is_corrupt_or_missing_not_a_transport_error(
    served: FileServer, reference: np.ndarray
) -> None:
    """A caller retrying RemoteStoreError must not retry bad data or a deleted store."""
    name = "damaged.ome.zarr"
    with create_ome_zarr(
        served.folder / name, shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx"
    ) as writer:
        _write_blocks(writer, reference, range(3))
    volume = open_volume(served.url(name))
    np.testing.assert_array_equal(volume.read((0, 0, 0), (1, 1, 1)), reference[:1, :1, :1])
    chunk = served.folder / name / "0" / "c" / "1" / "1" / "1"
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(CorruptVolumeError, match=re.escape(served.url(name))):
        volume.read((8, 16, 32), (8, 16, 32))
    shutil.rmtree(served.folder / name)
    reopened = pickle.loads(pickle.dumps(volume))  # a worker opening the deleted store
    with pytest.raises(VolumeNotFoundError, match=re.escape(served.url(name))):
        reopened.read((0, 0, 0), (1, 1, 1))


def test_missing_filesystem_package_names_the_extra(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(RemoteStoreError, match=r"'s3fs'.*pip install 'voxflow-io\[remote\]'"):
        open_volume(s3.url("anything.zarr"), storage_options=s3.storage_options)


def test_file_urls_are_local_paths(tmp_path: Path, reference: np.ndarray) -> None:
    target = tmp_path / "local.ome.zarr"
    with create_ome_zarr(
        target.as_uri(), shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx"
    ) as writer:
        _write_blocks(writer, reference, range(3))
    assert (target / "zarr.json").is_file()
    np.testing.assert_array_equal(np.asarray(open_volume(target.as_uri())), reference)


def test_server_that_dies_fails_fast_with_the_url(tmp_path: Path, reference: np.ndarray) -> None:
    server = FileServer(tmp_path)
    with create_ome_zarr(
        tmp_path / "dying.ome.zarr", shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx"
    ) as writer:
        _write_blocks(writer, reference, range(3))
    url = server.url("dying.ome.zarr")
    volume = open_volume(url)
    np.testing.assert_array_equal(volume.read((0, 0, 0), (1, 1, 1)), reference[:1, :1, :1])
    server.stop()  # dies between two reads of an open volume
    started = time.monotonic()
    with pytest.raises(RemoteStoreError, match=re.escape(f"{url}: reading window")):
        volume.read((0, 0, 0), (8, 16, 32))
    assert time.monotonic() - started < DEAD_SERVER_SECONDS

    dead_s3 = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "k", "secret": "s"}
    started = time.monotonic()
    with pytest.raises(RemoteStoreError, match=re.escape("s3://voxflow-test/x.zarr: opening")):
        open_volume("s3://voxflow-test/x.zarr", storage_options=dead_s3)
    assert time.monotonic() - started < DEAD_SERVER_SECONDS


@pytest.mark.slow  # moto's server in a child process: about 20 s here
def test_bad_credentials_and_an_s3_server_killed_between_reads(reference: np.ndarray) -> None:
    """moto checking signatures: a wrong secret or an unknown key is a RemoteStoreError naming
    the URL (never the secret); a server killed after the volume read once fails the next read
    within the retry bound, naming the URL."""
    server = AuthS3Server()
    try:
        url = server.url("auth.ome.zarr")
        good = server.storage_options
        _image(url, reference, good)
        volume = open_volume(url, storage_options=good)
        np.testing.assert_array_equal(volume.read((1, 2, 3), (4, 5, 6)), reference[1:5, 2:7, 3:9])
        for bad in ({**good, "secret": "not-the-secret"}, {**good, "key": "AKIANOSUCHKEY0000000"}):
            with pytest.raises(RemoteStoreError, match=re.escape(url)) as caught:
                open_volume(url, storage_options=bad)
            assert "not-the-secret" not in str(caught.value)
            assert server.secret not in str(caught.value)
    finally:
        server.kill()
    started = time.monotonic()
    with pytest.raises(RemoteStoreError, match=re.escape(f"{url}: reading window")):
        volume.read((8, 16, 0), (4, 4, 4))
    assert time.monotonic() - started < DEAD_SERVER_SECONDS


STALLED_READ = """
import sys, time
from voxflow_io import RemoteStoreError, open_volume

volume = open_volume(sys.argv[1])  # metadata is served
started = time.monotonic()
try:
    volume.read((0, 0, 0), (4, 4, 4))
except RemoteStoreError as error:
    print(f"{time.monotonic() - started:.1f}", error)
"""


def test_chunk_server_that_stops_answering_fails_within_the_low_speed_limit(
    tmp_path: Path, reference: np.ndarray
) -> None:
    """tensorstore sets no request timeout; curl's low-speed limit (1 s here, 15 s by default)
    with tensorstore's 3 retries bounds a read from a server that accepted and went silent."""
    (tmp_path / "stall").mkdir()
    with create_ome_zarr(
        tmp_path / "stall" / "s.ome.zarr", shape=SHAPE, dtype="uint16", chunks=CHUNKS, axes="zyx"
    ) as writer:
        _write_blocks(writer, reference, range(1))
    server = FileServer(tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-c", STALLED_READ, server.url("stall/s.ome.zarr")],
            env={**os.environ, "TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    seconds, message = result.stdout.split(" ", 1)
    assert server.url("stall/s.ome.zarr: reading window") in message
    assert "retry attempts failed" in message
    assert float(seconds) < 30


def test_hung_server_times_out_with_overridable_timeout() -> None:
    listener, port = silent_port()
    url = f"http://127.0.0.1:{port}/hung.zarr"
    options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(sock_read=0.5)}}
    started = time.monotonic()
    try:
        with pytest.raises(RemoteStoreError, match=re.escape(url)):
            open_volume(url, storage_options=options)
    finally:
        listener.close()
    assert time.monotonic() - started < 5
