"""Training batches per second of voxflow-segment's loader, beside the read floor and torchio.

One process builds a zarr dataset (OME-Zarr, uint16 images and uint8 labels, 64^3 zstd
chunks) and runs, on the same files:

* voxflow-segment: ``build_data`` + ``SegmentationDataModule.train_dataloader`` (128^3
  patches, batch 2, 2 workers, normalisation and collation included, augmentation excluded:
  it runs on the training device), sampler ``uniform`` and ``foreground``;
* the read floor: the same windows (same image and label reads) with voxflow-io's
  ``Volume.read`` in this process, nothing else;
* torchio: ``SubjectsDataset`` + ``Queue`` with ``UniformSampler`` and ``LabelSampler``
  (2 queue workers, z-score by a ``Lambda``, the DataLoader over the queue with 0 workers as
  torchio documents), reading the same zarr files through a custom reader.

Printed per row: setup time (index / queue construction), batches per second after warm-up,
the ratio to the floor and to torchio, and the peak PSS of this process and its workers
(proportional set size, so pages shared by forked workers are counted once).

Run: ``uv run --group bench python benchmarks/segment_loader.py [--shape 256 256 256]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from voxflow_io import create_ome_zarr, open_volume


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.is_file():
            out += [int(c) for c in children.read_text().split()]
    return out


class PeakMemory:
    """Samples the PSS of this process and all its descendants every 250 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids, frontier = [os.getpid()], [os.getpid()]
            while frontier:
                frontier = [c for p in frontier for c in _children(p)]
                pids += frontier
            self.peak = max(self.peak, sum(_pss_bytes(p) for p in pids))
            time.sleep(0.25)  # reading smaps_rollup costs CPU: sample sparsely

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_dataset(root: Path, volumes: int, shape: tuple[int, int, int], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(volumes):
        smooth = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 4)
        labels = (smooth > np.percentile(smooth, 90)).astype(np.uint8)
        image = (1000 + 300 * smooth / smooth.std() + 100 * rng.normal(size=shape)).astype(
            np.uint16
        )
        paths = {}
        for role, array in (("image", image), ("labels", labels)):
            path = root / f"{role}{i}.ome.zarr"
            writer = create_ome_zarr(
                path, shape=shape, dtype=array.dtype, chunks=(64, 64, 64), axes="zyx"
            )
            writer.write_region((0, 0, 0), array)
            writer.finish()
            paths[role] = path
        entries.append(
            {"id": f"v{i}", "image": str(paths["image"]), "labels": {"fg": str(paths["labels"])}}
        )
    return entries


def voxflow_config(entries: list[dict], run_dir: Path, kind: str, patch: int) -> Any:
    from voxflow_segment.config import RunConfig

    return RunConfig.model_validate(
        {
            "run_dir": str(run_dir),
            "data": {"volumes": entries, "targets": {"fg": {"classes": [0, 1]}}},
            "patch": {"size": [patch] * 3},
            "normalization": {"scheme": "fixed", "mean": [1000.0], "std": [300.0]},
            "sampler": {"kind": kind, "batches_per_epoch": 10_000},
            "loader": {"batch_size": 2, "num_workers": 2, "prefetch_factor": 2},
            "model": {"name": "dynunet", "kwargs": {}},
            "trainer": {"max_steps": 1},
        }
    )


def timed_batches(batches: Iterator[Any], count: int, warmup: int = 8) -> float:
    """Mean rate (batches per second) over ``count`` batches after ``warmup`` batches: a mean
    over a long run, because torchio's queue delivers in bursts (a best-of-runs would favour
    it)."""
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count / (time.perf_counter() - start)


def run_voxflow(config: Any, count: int) -> tuple[float, float, int, list]:
    from voxflow_segment.data import PatchStream, SegmentationDataModule, build_data

    with PeakMemory() as memory:
        started = time.perf_counter()
        data = build_data(config)
        module = SegmentationDataModule(config, data)
        loader = module.train_dataloader()
        setup = time.perf_counter() - started
        rate = timed_batches(iter(loader), count)
        del loader
    refs = PatchStream(data, rank=0, num_replicas=1).epoch(0)
    return setup, rate, memory.peak, refs


def run_floor(entries: list[dict], refs: list, patch: int, count: int) -> tuple[float, int]:
    images = [open_volume(e["image"]) for e in entries]
    labels = [open_volume(e["labels"]["fg"]) for e in entries]
    size = (patch,) * 3

    def batches() -> Iterator[None]:
        for batch in refs:
            for ref in batch:
                start = [
                    max(0, min(s, n - patch))
                    for s, n in zip(ref.start, images[ref.volume].shape, strict=True)
                ]
                images[ref.volume].read(start, size)
                labels[ref.volume].read(start, size)
            yield None

    with PeakMemory() as memory:
        rate = timed_batches(batches(), count)
    return rate, memory.peak


def _torchio_reader(path: Any) -> tuple[Any, np.ndarray]:
    """Whole-volume reader for torchio (module level: the queue's workers pickle it)."""
    import torch
    import zarr

    array = np.asarray(zarr.open_group(str(path), mode="r")["0"][:])
    return torch.from_numpy(array.astype(np.float32))[None], np.eye(4)


def _zscore(tensor: Any) -> Any:
    return (tensor - 1000.0) / 300.0


def run_torchio(
    entries: list[dict], sampler_name: str, patch: int, count: int
) -> tuple[float, float, int]:
    import torch
    import torchio as tio

    with PeakMemory() as memory:
        started = time.perf_counter()
        subjects = [
            tio.Subject(
                image=tio.ScalarImage(e["image"], reader=_torchio_reader),
                label=tio.LabelMap(e["labels"]["fg"], reader=_torchio_reader),
            )
            for e in entries
        ]
        dataset = tio.SubjectsDataset(
            subjects, transform=tio.Lambda(_zscore, types_to_apply=[tio.INTENSITY])
        )
        if sampler_name == "uniform":
            sampler: Any = tio.UniformSampler(patch)
        else:
            sampler = tio.LabelSampler(
                patch, label_name="label", label_probabilities={0: 0.67, 1: 0.33}
            )
        queue = tio.Queue(
            dataset, max_length=32, samples_per_volume=16, sampler=sampler, num_workers=2
        )
        loader = torch.utils.data.DataLoader(queue, batch_size=2, num_workers=0)
        setup = time.perf_counter() - started
        rate = timed_batches(iter(_repeat(loader)), count)
    return setup, rate, memory.peak


def _repeat(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 256])
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=150)
    args = parser.parse_args()
    shape = tuple(args.shape)
    rows: list[tuple[str, float | None, float, int]] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        entries = make_dataset(root, args.volumes, shape, seed=0)
        print(
            f"dataset: {args.volumes} x {shape} uint16 + uint8 labels, 64^3 zstd chunks "
            f"({time.perf_counter() - started:.0f} s to write)"
        )
        results: dict[str, Any] = {}
        for kind, tio_sampler in (("uniform", "uniform"), ("foreground", "label")):
            config = voxflow_config(entries, root / f"run-{kind}", kind, args.patch)
            setup, rate, peak, refs = run_voxflow(config, args.batches)
            floor, floor_peak = run_floor(entries, refs, args.patch, args.batches)
            t_setup, t_rate, t_peak = run_torchio(entries, tio_sampler, args.patch, args.batches)
            results[kind] = (rate, floor, t_rate)
            print(
                f"{kind}: voxflow {rate:.2f}, floor {floor:.2f}, torchio {t_rate:.2f} batch/s",
                flush=True,
            )
            rows += [
                (f"voxflow-segment {kind}", setup, rate, peak),
                (f"read floor ({kind} windows)", None, floor, floor_peak),
                (f"torchio Queue + {tio_sampler.capitalize()}Sampler", t_setup, t_rate, t_peak),
            ]
    print(f"\n{'loader':44} {'setup s':>8} {'batch/s':>8} {'peak PSS':>9}")
    for name, setup, rate, peak in rows:
        setup_text = "-" if setup is None else f"{setup:.1f}"
        print(f"{name:44} {setup_text:>8} {rate:8.2f} {peak / 2**30:8.2f}G")
    print()
    for kind, (rate, floor, t_rate) in results.items():
        print(
            f"{kind:10}: voxflow / floor = {rate / floor:.2f} (goal >= 0.8), "
            f"voxflow / torchio = {rate / t_rate:.2f} (goal >= 2)"
        )


if __name__ == "__main__":
    main()
