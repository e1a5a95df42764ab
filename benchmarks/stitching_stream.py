"""Streaming sliding-window prediction from zarr into zarr under a memory cap.

Input: uint16 zarr (64^3 chunks, zstd), default 512x2048x2048 (4 GiB). Output: float16 zarr,
64^3 chunks. Window 64^3, overlap 0.5, Gaussian weights, identity model (uint16 -> float32).
voxflow runs in a child process whose address space is capped (``resource.setrlimit``,
RLIMIT_AS, default 1.5 GiB) and must finish; every output chunk file must be written exactly
once (counted through CPython's audit hook on renames: zarr writes each chunk to a temporary
file and renames it); a cropped region must equal a brute-force weighted average computed
here from the input; and the time is set against the decode floor of the input and the encode
floor of the output (numcodecs on all cores, bytes in memory). Then, on 128x512x512, voxflow
streaming into zarr beside MONAI's PatchInferer + ZarrAvgMerger, the only streaming peer.

    uv run --group bench python benchmarks/stitching_stream.py [--shape Z Y X] [--cap-gib GIB]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from voxflow_slicing import grid_positions, importance_map

PATCH = (64, 64, 64)
CHUNK = 64
BLOCK = (128, 512, 512)

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, time
    cap = int(float(sys.argv[3]) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    renames = []
    output_path = sys.argv[2]
    def hook(event, args):
        if event in ("os.rename", "os.replace") and str(args[1]).startswith(output_path):
            renames.append(os.path.relpath(str(args[1]), output_path))
    sys.addaudithook(hook)
    import numpy as np, zarr
    from voxflow_io import open_volume
    from voxflow_slicing import sliding_window_predict
    source = open_volume(sys.argv[1])
    output = zarr.open_array(output_path, mode="r+")
    block_shape = tuple(int(b) for b in sys.argv[4:7])
    begin = time.perf_counter()
    sliding_window_predict(
        source, lambda batch: batch.astype(np.float32), (64, 64, 64), output=output,
        overlap=0.5, mode="gaussian", block_shape=block_shape,
    )
    seconds = time.perf_counter() - begin
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    report = {"seconds": seconds, "renames": renames, "peak_rss_mib": int(status) / 1024}
    print(json.dumps(report))
    """
)


def make_input(path: Path, shape: tuple[int, ...]) -> None:
    if path.exists():
        return
    print(f"writing {path} {shape} uint16 ...", flush=True)
    array = zarr.create_array(
        str(path), shape=shape, chunks=(CHUNK,) * 3, dtype="uint16", compressors=[ZstdCodec()]
    )
    rng = np.random.default_rng(0)
    y = np.arange(shape[1], dtype=np.float32)[:, None]
    x = np.arange(shape[2], dtype=np.float32)[None, :]
    for z0 in range(0, shape[0], CHUNK):
        z = np.arange(z0, z0 + CHUNK, dtype=np.float32)[:, None, None]
        slab = 20000 + 6000 * np.sin(z / 17) * np.cos(y / 23) + 4000 * np.sin(x / 31 + z / 40)
        slab += rng.normal(0, 40, size=slab.shape).astype(np.float32)
        array[z0 : z0 + CHUNK] = np.clip(slab, 0, 65535).astype(np.uint16)


def chunk_files(path: Path) -> list[Path]:
    return sorted(p for p in (path / "c").rglob("*") if p.is_file())


def decode_floor(path: Path, dtype: str) -> float:
    codec = numcodecs.Zstd()
    blobs = [p.read_bytes() for p in chunk_files(path)]

    def one(blob: bytes) -> None:
        codec.decode(blob, out=np.empty((CHUNK,) * 3, dtype))

    begin = time.perf_counter()
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(one, blobs))
    return time.perf_counter() - begin


def encode_floor(path: Path) -> float:
    array = zarr.open_array(str(path), mode="r")
    codec = numcodecs.Zstd()
    chunks = [
        np.ascontiguousarray(array[tuple(slice(c, c + CHUNK) for c in corner)])
        for corner in itertools.product(
            *[range(0, n, CHUNK) for n in array.shape[:1]],
            range(0, CHUNK * 8, CHUNK),
            range(0, CHUNK * 8, CHUNK),
        )
    ]
    begin = time.perf_counter()
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(codec.encode, chunks))
    per_chunk = (time.perf_counter() - begin) / len(chunks)
    return per_chunk * np.prod([n // CHUNK for n in array.shape])


def brute_force_crop(
    source: zarr.Array, shape: tuple[int, ...], crop: tuple[slice, ...]
) -> np.ndarray:
    weights = importance_map(PATCH, "gaussian")
    total = np.zeros([c.stop - c.start for c in crop])
    weight_sum = np.zeros_like(total)
    for start in grid_positions(shape, PATCH, overlap=0.5):
        lo = [max(s, c.start) for s, c in zip(start, crop, strict=True)]
        hi = [min(s + p, c.stop) for s, p, c in zip(start, PATCH, crop, strict=True)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            continue
        window = tuple(slice(low - s, h - s) for low, h, s in zip(lo, hi, start, strict=True))
        target = tuple(
            slice(low - c.start, h - c.start) for low, h, c in zip(lo, hi, crop, strict=True)
        )
        data = source[tuple(slice(s, s + p) for s, p in zip(start, PATCH, strict=True))].astype(
            np.float64
        )
        total[target] += data[window] * weights[window]
        weight_sum[target] += weights[window]
    return total / weight_sum


def run_voxflow(source: Path, output: Path, shape: tuple[int, ...], cap_gib: float) -> dict:
    zarr.create_array(
        str(output),
        shape=shape,
        chunks=(CHUNK,) * 3,
        dtype="float16",
        compressors=[ZstdCodec()],
        overwrite=True,
    )
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(source),
            str(output.resolve()),
            str(cap_gib),
            *map(str, BLOCK),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"voxflow child failed under the cap:\\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_monai(source: np.ndarray, store: Path) -> float:
    import torch
    from monai.inferers import PatchInferer, SlidingWindowSplitter
    from monai.inferers.merger import ZarrAvgMerger

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    inferer = PatchInferer(
        splitter=SlidingWindowSplitter(patch_size=PATCH, overlap=0.5),
        merger_cls=ZarrAvgMerger,
        batch_size=8,
        store=str(store),
        dtype="float16",
    )
    begin = time.perf_counter()
    with torch.no_grad():
        inferer(torch.from_numpy(source.astype(np.float32))[None, None], lambda x: x)
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 2048, 2048])
    parser.add_argument("--cap-gib", type=float, default=1.5)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "_data" / "stitching")
    args = parser.parse_args()
    shape = tuple(args.shape)
    args.data.mkdir(parents=True, exist_ok=True)
    source_path = args.data / f"input-{'x'.join(map(str, shape))}.zarr"
    output_path = args.data / "output.zarr"
    make_input(source_path, shape)
    result = run_voxflow(source_path, output_path, shape, args.cap_gib)
    written = result["renames"]
    expected_chunks = int(np.prod([n // CHUNK for n in shape]))
    assert len(written) == len(set(written)) == expected_chunks, (
        len(written),
        len(set(written)),
        expected_chunks,
    )
    source = zarr.open_array(str(source_path), mode="r")
    output = zarr.open_array(str(output_path), mode="r")
    crop = (
        (slice(100, 140), slice(500, 580), slice(1000, 1070))
        if shape[0] > 140
        else (slice(10, 50), slice(100, 180), slice(200, 270))
    )
    expected = brute_force_crop(source, shape, crop)
    np.testing.assert_allclose(
        output[crop].astype(np.float64), expected, rtol=2e-3, atol=1.0
    )  # float16 output
    decode = decode_floor(source_path, "uint16")
    encode = encode_floor(output_path)
    floor = max(decode, encode)
    print(
        f"\ninput {shape} uint16 ({np.prod(shape) * 2 / 2**30:.1f} GiB), window {PATCH}, "
        f"overlap 0.5, gaussian, blocks {BLOCK}, cap {args.cap_gib} GiB"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| voxflow streaming, s | {result['seconds']:.1f} |")
    print(
        "| output chunks written / expected / distinct | "
        f"{len(written)} / {expected_chunks} / {len(set(written))} |"
    )
    print(f"| child peak RSS, MiB | {result['peak_rss_mib']:.0f} |")
    print(f"| input decode floor, s | {decode:.1f} |")
    print(f"| output encode floor, s | {encode:.1f} |")
    print(f"| voxflow / max(floors) | {result['seconds'] / floor:.1f} |")
    small = (128, 512, 512)
    small_path = args.data / "input-128x512x512.zarr"
    make_input(small_path, small)
    small_result = run_voxflow(small_path, args.data / "output-small.zarr", small, args.cap_gib)
    monai_seconds = run_monai(
        zarr.open_array(str(small_path), mode="r")[:], args.data / "monai.zarr"
    )
    print(f"\n| {small} into zarr | s |")
    print("|---|---|")
    print(f"| voxflow (capped child process) | {small_result['seconds']:.2f} |")
    print(f"| MONAI PatchInferer + ZarrAvgMerger | {monai_seconds:.2f} |")
    print(f"| MONAI / voxflow | {monai_seconds / small_result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
