"""Random 128^3 windows from a 512^3 uint16 zarr v3 volume: 2 codecs x 3 layouts, local and S3.

voxflow (``open_volume(...).read``) beside tensorstore and zarr-python reading the same windows
(aligned: starts on the 64^3 chunk grid; unaligned: odd starts) from the same stores, in the
same process, readers interleaved round by round, best of ``--rounds``. Codecs: zstd (default
level) and blosc-lz4 (clevel 5, byte shuffle); layouts: 64^3 chunks unsharded, and in shards of
256^3 and 512^3. Each store is read from the local folder and through moto's S3 server (in this
process, on the loopback address). The floor: decoding exactly the chunks a window touches
(compressed bytes already in memory) with numcodecs on 2 threads (the machine's 2 cores),
raced with the readers in every row. S3 rows read the first ``--s3-windows`` windows (moto's
server, in Python, reads a whole object for every ranged GET: a 512^3 shard costs ~0.2 s).

    uv run --group bench python benchmarks/io_read.py [--windows 20] [--rounds 3]
        [--s3-windows 6] [--data DIR]

The stores are written once into --data and reused (local reads are from the page cache: this
measures decoding, copying and request overhead, not the disk).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import numcodecs
import numcodecs.blosc
import numpy as np
import tensorstore as ts
import zarr
from moto.server import ThreadedMotoServer
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.storage import FsspecStore

from voxflow_io import open_volume

SHAPE = (512, 512, 512)
CHUNK = 64
WINDOW = 128
CODECS: dict[str, Callable[[], ZstdCodec | BloscCodec]] = {
    "zstd": ZstdCodec,
    "blosc-lz4": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
}
LAYOUTS = {"unsharded": None, "shards 256³": 256, "shards 512³": 512}
KEY, SECRET, BUCKET = "voxflow-bench-key", "voxflow-bench-secret", "voxflow-bench"
Start = tuple[int, int, int]
Reader = Callable[[Start], Any]


def make_volume(shape: tuple[int, int, int] = (256, 1024, 1024)) -> np.ndarray:
    """CT-like volume: smooth structure plus sensor noise (the noise makes it hard to compress:
    at 512^3 in 64^3 chunks, zstd ~1.1x, blosc-lz4 with byte shuffle ~1.4x).

    Shapes:
        result: ``shape`` (Z, Y, X) uint16, generated 32 planes at a time.
    """
    rng = np.random.default_rng(0)
    z = np.arange(shape[0], dtype=np.float32)[:, None, None]
    y = np.arange(shape[1], dtype=np.float32)[None, :, None]
    x = np.arange(shape[2], dtype=np.float32)[None, None, :]
    volume = np.empty(shape, np.uint16)
    for start in range(0, shape[0], 32):
        zz = z[start : start + 32]
        slab = 20000 + 6000 * np.sin(zz / 17) * np.cos(y / 23) + 4000 * np.sin(x / 31 + zz / 40)
        slab += rng.normal(0, 40, size=slab.shape).astype(np.float32)
        volume[start : start + 32] = np.clip(slab, 0, 65535)
    return volume


def build_stores(folder: Path, volume: np.ndarray) -> dict[tuple[str, str], Path]:
    """Write the 6 stores (codec x layout) once; a store is renamed into place when complete.

    Shapes:
        volume: SHAPE (Z, Y, X) uint16.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[tuple[str, str], Path] = {}
    for (codec, make_codec), (layout, shard) in itertools.product(CODECS.items(), LAYOUTS.items()):
        path = paths[codec, layout] = folder / f"{codec}-{shard or 'unsharded'}.zarr"
        if path.exists():
            continue
        print(f"writing {path} (once) ...", flush=True)
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        array = zarr.create_array(
            str(partial),
            shape=SHAPE,
            chunks=(CHUNK,) * 3,
            shards=(shard,) * 3 if shard else None,
            dtype="uint16",
            compressors=[make_codec()],
            zarr_format=3,
        )
        array[:] = volume
        partial.rename(path)
    return paths


def windows(count: int, aligned: bool, seed: int) -> list[Start]:
    """``count`` window starts: multiples of CHUNK (aligned) or odd numbers (unaligned)."""
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(count):
        if aligned:
            z, y, x = (int(rng.integers(0, (n - WINDOW) // CHUNK + 1)) * CHUNK for n in SHAPE)
        else:
            z, y, x = (int(rng.integers(1, n - WINDOW)) | 1 for n in SHAPE)
        starts.append((z, y, x))
    return starts


def box(start: Start) -> tuple[slice, ...]:
    return tuple(slice(s, s + WINDOW) for s in start)


class ByteCounter:
    """WSGI middleware around moto's app: counts the GET requests and the body bytes served."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.lock, self.gets, self.sent = app, threading.Lock(), 0, 0

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        with self.lock:
            self.gets += environ["REQUEST_METHOD"] == "GET"
        for piece in self.app(environ, start_response):
            with self.lock:
                self.sent += len(piece)
            yield piece


def start_s3(paths: Iterable[Path]) -> tuple[ThreadedMotoServer, str, ByteCounter]:
    """moto's S3 server on 127.0.0.1 (a free port) holding every store under its folder name."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    counter = ByteCounter(server._server.app)  # type: ignore[union-attr]
    server._server.app = counter  # type: ignore[union-attr]
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    files = [
        (file, f"{path.name}/{file.relative_to(path).as_posix()}")
        for path in paths
        for file in path.rglob("*")
        if file.is_file()
    ]
    print(f"uploading {len(files)} files to moto ...", flush=True)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: client.upload_file(str(item[0]), BUCKET, item[1]), files))
    return server, endpoint, counter


def readers(path: Path, endpoint: str | None) -> dict[str, Reader]:
    """The three readers of one store, each opened once; ``endpoint`` None reads the folder."""
    size = (WINDOW,) * 3
    if endpoint is None:
        volume = open_volume(path)
        kvstore: dict[str, Any] = {"driver": "file", "path": f"{path}/"}
        array = zarr.open_array(str(path), mode="r")
    else:
        url, options = (
            f"s3://{BUCKET}/{path.name}",
            {"endpoint_url": endpoint, "key": KEY, "secret": SECRET},
        )
        volume = open_volume(url, storage_options=options)
        kvstore = {
            "driver": "s3",
            "bucket": BUCKET,
            "path": f"{path.name}/",
            "endpoint": endpoint,
            "aws_region": "us-east-1",
        }
        array = zarr.open_array(
            FsspecStore.from_url(url, storage_options=options, read_only=True), mode="r"
        )
    store = ts.open({"driver": "zarr3", "kvstore": kvstore}, read=True).result()
    return {
        "voxflow": lambda s: volume.read(s, size),
        "tensorstore": lambda s: store[box(s)].read().result(),
        "zarr-python": lambda s: array[box(s)],
    }


def race(named: dict[str, Reader], starts: list[Start], rounds: int) -> dict[str, float]:
    """Milliseconds per window of each reader: best of ``rounds`` means, readers interleaved
    round by round (in a rotating order) so that load from other processes hits them alike."""
    best = dict.fromkeys(named, math.inf)
    order = list(named)
    for round_ in range(rounds):
        for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
            begin = time.perf_counter()
            for start in starts:
                named[name](start)
            best[name] = min(best[name], (time.perf_counter() - begin) / len(starts) * 1e3)
    return best


def chunk_blobs(path: Path, starts: list[Start]) -> dict[Start, list[bytes]]:
    """Compressed bytes of the chunks each window touches, from an unsharded store's files."""
    metadata = zarr.open_array(str(path), mode="r").metadata
    blobs = {}
    for start in starts:
        ranges = [range(s // CHUNK, (s + WINDOW - 1) // CHUNK + 1) for s in start]
        keys = [metadata.encode_chunk_key(i) for i in itertools.product(*ranges)]
        blobs[start] = [(path / key).read_bytes() for key in keys]
    return blobs


def floor_reader(codec: str, blobs: dict[Start, list[bytes]], pool: ThreadPoolExecutor) -> Reader:
    """The decode floor as a reader (raced with the others, so that it sees the same load):
    decode the window's chunks on 2 threads (pool.map over the chunks, a reused buffer per
    thread); blosc limited to 1 thread inside each while it runs (2 x 1 = 2 cores)."""
    decoder = numcodecs.Zstd() if codec == "zstd" else numcodecs.Blosc()
    local = threading.local()

    def decode(blob: bytes) -> None:
        if not hasattr(local, "buffer"):
            local.buffer = np.empty((CHUNK,) * 3, np.uint16)
        decoder.decode(blob, out=local.buffer)

    def read(start: Start) -> None:
        previous = numcodecs.blosc.set_nthreads(1)
        try:
            list(pool.map(decode, blobs[start]))
        finally:
            numcodecs.blosc.set_nthreads(previous)

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--s3-windows", type=int, default=6, help="windows of the S3 rows (the first ones)"
    )
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "_data" / "io_read")
    args = parser.parse_args()
    load_start = os.getloadavg()
    volume = make_volume(SHAPE)
    paths = build_stores(args.data, volume)
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = KEY, SECRET
    server, endpoint, counter = start_s3(paths.values())
    rows: list[tuple[str, str, str, str, dict[str, float]]] = []
    pool = ThreadPoolExecutor(2)
    fetched: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    for aligned in (True, False):
        label = "aligned" if aligned else "unaligned"
        starts = windows(args.windows, aligned, seed=1 + aligned)
        reference = volume[box(starts[0])]
        for codec in CODECS:
            blobs = chunk_blobs(paths[codec, "unsharded"], starts)
            for layout, where in itertools.product(LAYOUTS, ("local", "S3")):
                named = readers(paths[codec, layout], None if where == "local" else endpoint)
                for name, read in named.items():  # also the warm-up read
                    found = np.asarray(read(starts[0]))
                    if found.dtype != reference.dtype or not np.array_equal(found, reference):
                        raise RuntimeError(
                            f"{name} {where} {codec} {layout}: window {starts[0]} "
                            f"differs from the reference ({found.dtype} {found.shape})"
                        )
                named["floor"] = floor_reader(codec, blobs, pool)
                used = starts if where == "local" else starts[: args.s3_windows]
                rows.append((label, codec, layout, where, race(named, used, args.rounds)))
                if where == "S3" and aligned:
                    first = blobs[starts[0]]
                    fetched[codec, layout] = {"chunks": (len(first), sum(map(len, first)))}
                    for name in ("voxflow", "tensorstore"):
                        counter.gets = counter.sent = 0
                        named[name](starts[0])
                        fetched[codec, layout][name] = (counter.gets, counter.sent)
                print(f"done: {label} {codec} {layout} {where}", flush=True)
    server.stop()
    pool.shutdown()
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}"
        for p in ("numpy", "zarr", "numcodecs", "tensorstore", "voxflow-io", "moto", "s3fs")
    )
    print(
        f"\nwindow {WINDOW}^3 uint16 from {SHAPE}, chunks {CHUNK}^3, {args.windows} windows, "
        f"({args.s3_windows} for S3), best of {args.rounds} rounds; {os.cpu_count()} cores, "
        "load average "
        f"{' '.join(f'{v:.2f}' for v in load_start)} at start, "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at end\n{versions}\n"
        "floor: numcodecs decode of the window's chunks (bytes in memory, from the unsharded "
        "store) on 2 threads, blosc set to 1 internal thread (2 x 1 = 2 cores), no assembly; "
        "raced with the readers in every row.\n"
        "S3: moto's server runs in Python in this process, on the same 2 cores: its overhead is "
        "in the S3 rows. moto reads a whole object for every GET, ranged or not (~0.2 s for a "
        "512^3 shard): the sharded S3 rows measure mostly moto.\n"
    )
    print(
        "| windows | codec | layout | store | voxflow ms | tensorstore ms | zarr-python ms "
        "| floor ms | voxflow/tensorstore | voxflow/floor |\n" + "|---" * 10 + "|"
    )
    for label, codec, layout, where, ms in rows:
        print(
            f"| {label} | {codec} | {layout} | {where} | {ms['voxflow']:.2f} | "
            f"{ms['tensorstore']:.2f} | {ms['zarr-python']:.2f} | {ms['floor']:.2f} | "
            f"{ms['voxflow'] / ms['tensorstore']:.2f} | {ms['voxflow'] / ms['floor']:.2f} |"
        )
    print("\n| windows | codec | layout | voxflow local ms | voxflow S3 ms | S3/local |")
    print("|---" * 6 + "|")
    for (label, codec, layout, _, local), (*_, s3) in zip(rows[::2], rows[1::2], strict=True):
        vl, vs = local["voxflow"], s3["voxflow"]
        print(f"| {label} | {codec} | {layout} | {vl:.2f} | {vs:.2f} | {vs / vl:.2f} |")
    print(
        "\nS3, one aligned window on an open handle (after the warm-up): GETs and bytes served "
        "by moto, beside the chunks' compressed bytes\n\n"
        "| codec | layout | chunks, bytes | voxflow GETs, bytes | tensorstore GETs, bytes |\n"
        + "|---" * 5
        + "|"
    )
    for (codec, layout), counts in fetched.items():
        cells = [f"{counts[n][0]}, {counts[n][1]:,}" for n in ("chunks", "voxflow", "tensorstore")]
        print(f"| {codec} | {layout} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
