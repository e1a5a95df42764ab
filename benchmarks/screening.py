"""Foreground screening of window grids: voxflow beside brute force, scikit-image and the floors.

Labels: 256x1024x1024 uint8 with ~15 % foreground in 16^3 blobs. Grids: patch 128^3 stride 32
and patch 64^3 stride 16, threshold 0.10. Sources: in memory, and zarr v3 (64^3 chunks, zstd
and blosc-lz4) read through a voxflow-io Volume and through zarr-python.

    uv run --group bench python benchmarks/screening.py [--skip-brute-force]

Floors: in memory, one ``np.count_nonzero`` pass over the labels; from zarr, decoding every
chunk (bytes already in memory) on all cores.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from skimage.transform import integral_image, integrate
from zarr.codecs import BloscCodec, ZstdCodec

from voxflow_io import open_volume
from voxflow_slicing import grid_positions, screen_patches

SHAPE = (256, 1024, 1024)
THRESHOLD = 0.10
CASES = (((128, 128, 128), 32), ((64, 64, 64), 16))


def make_labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    blobs = rng.random((SHAPE[0] // 16, SHAPE[1] // 16, SHAPE[2] // 16)) < 0.15
    return np.repeat(np.repeat(np.repeat(blobs, 16, 0), 16, 1), 16, 2).astype(np.uint8)


def best(function: Callable[[], object], rounds: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(rounds):
        begin = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - begin)
    return min(times) * 1e3, result


def brute_force(labels: np.ndarray, patch: tuple[int, ...], stride: int) -> np.ndarray:
    positions = grid_positions(labels.shape, patch, stride=stride)
    volume = float(np.prod(patch))
    return np.array(
        [
            np.count_nonzero(
                labels[tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))]
            )
            / volume
            for start in positions
        ]
    )


def skimage_fractions(labels: np.ndarray, patch: tuple[int, ...], stride: int) -> np.ndarray:
    table = integral_image(labels != 0)
    positions = grid_positions(labels.shape, patch, stride=stride)
    ends = positions + np.array(patch) - 1
    return integrate(table, positions, ends) / float(np.prod(patch))


def decode_floor(path: Path, codec: numcodecs.abc.Codec) -> float:
    metadata = zarr.open_array(str(path), mode="r").metadata
    grid = [range(n // 64) for n in SHAPE]
    blobs = [(path / metadata.encode_chunk_key(i)).read_bytes() for i in itertools.product(*grid)]
    local = np.empty((64, 64, 64), np.uint8)

    def decode_all() -> None:
        def one(blob: bytes) -> None:
            codec.decode(blob, out=np.empty_like(local))

        with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
            list(pool.map(one, blobs))

    return best(decode_all)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "_data" / "screening")
    parser.add_argument("--skip-brute-force", action="store_true")
    args = parser.parse_args()
    labels = make_labels()
    args.data.mkdir(parents=True, exist_ok=True)
    stores = {
        "zarr zstd": (args.data / "zstd.zarr", ZstdCodec(), numcodecs.Zstd()),
        "zarr blosc-lz4": (
            args.data / "lz4.zarr",
            BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
            numcodecs.Blosc(),
        ),
    }
    for path, codec, _ in stores.values():
        if not path.exists():
            array = zarr.create_array(
                str(path), shape=SHAPE, chunks=(64,) * 3, dtype="uint8", compressors=[codec]
            )
            array[:] = labels
    memory_floor = best(lambda: np.count_nonzero(labels))[0]
    floors = {name: decode_floor(path, numcodec) for name, (path, _, numcodec) in stores.items()}
    print(
        f"labels {SHAPE} uint8, {labels.mean():.1%} foreground, threshold {THRESHOLD}, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"floors: in memory (count_nonzero) {memory_floor:.1f} ms; "
        + "; ".join(f"{k} decode {v:.1f} ms" for k, v in floors.items())
    )
    print("\n| case | source | method | ms | x floor | brute force / method |")
    print("|---|---|---|---|---|---|")
    for patch, stride in CASES:
        case = f"{patch[0]}^3 stride {stride}"
        voxflow_ms, result = best(
            lambda p=patch, s=stride: screen_patches(
                labels, p, stride=s, min_foreground_fraction=THRESHOLD
            )
        )
        reference_fraction = result.foreground_fraction
        rows = [("memory", "voxflow", voxflow_ms, memory_floor)]
        skimage_ms, fractions = best(
            lambda p=patch, s=stride: skimage_fractions(labels, p, s), rounds=1
        )
        assert np.allclose(fractions, reference_fraction), "scikit-image disagrees"
        rows.append(("memory", "scikit-image integral_image", skimage_ms, memory_floor))
        brute_ms = float("nan")
        if not args.skip_brute_force:
            brute_ms, fractions = best(
                lambda p=patch, s=stride: brute_force(labels, p, s), rounds=1
            )
            assert np.array_equal(fractions, reference_fraction), "brute force disagrees"
            rows.append(("memory", "brute force", brute_ms, memory_floor))
        for name, (path, _, _) in stores.items():
            volume = open_volume(path)
            ms, result = best(
                lambda v=volume, p=patch, s=stride: screen_patches(
                    v, p, stride=s, min_foreground_fraction=THRESHOLD
                )
            )
            assert np.array_equal(result.foreground_fraction, reference_fraction)
            rows.append((name, "voxflow on voxflow-io Volume", ms, floors[name]))
            array = zarr.open_array(str(path), mode="r")
            ms, result = best(
                lambda a=array, p=patch, s=stride: screen_patches(
                    a, p, stride=s, min_foreground_fraction=THRESHOLD
                ),
                rounds=1,
            )
            assert np.array_equal(result.foreground_fraction, reference_fraction)
            rows.append((name, "voxflow on zarr-python array", ms, floors[name]))
        for source, method, ms, floor in rows:
            speedup = f"{brute_ms / ms:.0f}" if brute_ms == brute_ms else "-"
            print(f"| {case} | {source} | {method} | {ms:.0f} | {ms / floor:.2f} | {speedup} |")


if __name__ == "__main__":
    main()
