"""In-memory sliding-window stitching: voxflow beside MONAI and torchio on the same volume.

128x512x512 float32, window 64^3, overlap 0.5, Gaussian (torchio: Hann) weights, identity
model, batch 8. Every method must return the input (identity model); the table gives the
best of 3 wall times and the extra peak resident memory of each method (freed memory handed
back with malloc_trim and VmHWM reset through /proc/self/clear_refs before each run, so all
methods run in this one process).

    uv run --group bench python benchmarks/stitching.py
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchio as tio
from monai.inferers import sliding_window_inference
from tiler import Merger, Tiler

from voxflow_slicing import sliding_window_predict

SHAPE = (128, 512, 512)
PATCH = (64, 64, 64)
BATCH = 8


def rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


LIBC = ctypes.CDLL("libc.so.6")


def measure(run: Callable[[], np.ndarray], volume: np.ndarray) -> tuple[float, float]:
    times, peak = [], 0.0
    for _ in range(3):
        LIBC.malloc_trim(0)  # hand freed memory back, so reuse cannot hide a method's peak
        Path("/proc/self/clear_refs").write_text("5")
        before = rss_mib("VmRSS")
        begin = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - begin)
        peak = max(peak, rss_mib("VmHWM") - before)
        np.testing.assert_allclose(result.reshape(volume.shape), volume, atol=1e-4)
        del result
    return min(times), peak


def main() -> None:
    torch.set_num_threads(2)
    volume = np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)

    def voxflow() -> np.ndarray:
        return sliding_window_predict(
            volume, lambda b: b, PATCH, overlap=0.5, mode="gaussian", batch_size=BATCH
        )

    def monai() -> np.ndarray:
        with torch.no_grad():
            out = sliding_window_inference(
                torch.from_numpy(volume[None]),
                PATCH,
                BATCH,
                lambda x: x,
                overlap=0.5,
                mode="gaussian",
            )
        return out[0].numpy()

    def torchio() -> np.ndarray:
        subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(volume)))
        sampler = tio.inference.GridSampler(
            subject, PATCH, patch_overlap=tuple(p // 2 for p in PATCH)
        )
        loader = torch.utils.data.DataLoader(sampler, batch_size=BATCH)
        aggregator = tio.inference.GridAggregator(sampler, overlap_mode="hann")
        with torch.no_grad():
            for batch in loader:
                aggregator.add_batch(batch["image"][tio.DATA], batch[tio.LOCATION])
        return aggregator.get_output_tensor().numpy()

    def tiler_peer() -> np.ndarray:
        tiles = Tiler(
            data_shape=volume.shape,
            tile_shape=(1, *PATCH),
            overlap=(0, 0.5, 0.5, 0.5),
            channel_dimension=0,
        )
        merger = Merger(tiler=tiles, window="boxcar")  # its hann has zeros at the volume edge
        for batch_id, batch in tiles(volume, batch_size=BATCH):
            merger.add_batch(batch_id, BATCH, batch)
        return merger.merge(unpad=True)

    rows = [
        (name, *measure(run, volume))
        for name, run in (
            ("voxflow", voxflow),
            ("MONAI sliding_window_inference", monai),
            ("torchio GridSampler + GridAggregator", torchio),
            ("tiler Tiler + Merger (boxcar)", tiler_peer),
        )
    ]
    base = rows[0][1]
    print(
        f"\n{SHAPE} float32, window {PATCH}, overlap 0.5, batch {BATCH}, identity model, "
        "torch threads 2"
    )
    print("| method | s | x voxflow | extra peak RSS MiB |")
    print("|---|---|---|---|")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
