"""Anchor/positive pairs per second of voxflow-contrast's loader, beside the read floor.

One process writes synthetic experiments (``make_experiments``: 2 plates, infected and mock
wells, ``--fields`` fields of view per well, ``--frames`` x 2 channels x ``--depth`` x
``--size``^2 uint16 per field, one frame per zstd chunk) and their tracking CSVs to a
temporary folder, builds the cell index with ``patch_size = --crop`` and runs, on the same
files:

* voxflow-contrast: ``ContrastDataModule`` (split by field of view, ``val_fraction`` 0.1;
  ``SamplerConfig(batch_size=--batch-size, seed=0)``, ``--workers`` persistent workers,
  ``--z-window`` x ``--crop`` crops of both channels, normalised): the training loader;
* the read floor: the same windows (the same anchor and positive rows of the same batches,
  corners recomputed from the index table: ``floor(y) - Y // 2``, ``floor(x) - X // 2``,
  ``floor(z) - Z // 2`` clamped into the stack, the plate channels the loader reads) with
  voxflow-io's ``Volume.read`` in a ``DataLoader`` over the precomputed windows, same number
  of workers: raw uint16, no normalisation, no sampler, no channel reordering;
* the sampler alone: ``PairBatchSampler`` iterated in this process (anchors from the batch
  sampler, one positive each from ``draw_positives``), nothing read.

Each loader is warmed up (``--warmup`` batches: worker start, volumes opened) and then
``--batches`` batches are timed; ``--rounds`` alternate voxflow and the floor and the mean
rate is reported. A profile in this process (no workers) splits one batch's time into the
voxflow dataset's item and the plain reads of the same windows. Before timing, the first
batch is checked: the loader's rows are the floor's, and its crops equal the floor's reads
normalised with numpy.

Run: ``uv run --group bench python benchmarks/contrast_loader.py [--batch-size 128]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from voxflow_contrast import (
    CellIndex,
    ContrastDataModule,
    ExperimentsConfig,
    PairBatchSampler,
    SamplerConfig,
    build_index,
    load_experiments,
    make_experiments,
    register_experiments,
)
from voxflow_contrast.data import field_keys
from voxflow_io import Volume


def make_data(root: Path, args: argparse.Namespace) -> tuple[ExperimentsConfig, CellIndex]:
    started = time.perf_counter()
    path = make_experiments(
        root / "experiments",
        seed=0,
        experiments=2,
        fields=args.fields,
        frames=args.frames,
        size=args.size,
        cells=args.cells,
        t_on=args.frames // 2,
        depth=args.depth,
    )
    written = time.perf_counter() - started
    config = load_experiments(path)
    started = time.perf_counter()
    index = build_index(
        config, patch_size=tuple(args.crop), cache_dir=root / "cache", progress=False
    )
    table = index.table
    print(
        f"data: 2 experiments x 2 wells x {args.fields} fields of ({args.frames}, 2, "
        f"{args.depth}, {args.size}, {args.size}) uint16, one frame per chunk "
        f"({written:.0f} s to write); index {len(table):,} rows, "
        f"{int(table['anchor'].sum()):,} anchors ({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    return config, index


# -- the read floor ----------------------------------------------------------------------------


class Windows:
    """Every row's read window, recomputed from the index table and the registered fields.

    Shapes:
        ``corner``: ``(N, 5)`` int64 ``(field, t, z, y, x)`` per row; ``channels``:
        ``(F, 2)`` int64 ``(first plate channel, channels read)`` per field.
    """

    def __init__(self, config: ExperimentsConfig, index: CellIndex, z_window: int) -> None:
        fields = {f.key: f for e in register_experiments(config) for f in e.fields}
        keys, fov_id = field_keys(index)
        registered = [fields[key] for key in keys]
        self.positions = [f.position for f in registered]
        first = [min(f.channel_indices) for f in registered]
        span = [max(f.channel_indices) - min(f.channel_indices) + 1 for f in registered]
        self.channels = np.array([first, span], np.int64).T
        self.channel_selection = [
            np.array(f.channel_indices, np.int64) - min(f.channel_indices) for f in registered
        ]
        table = index.table
        depth = np.array([f.shape[2] for f in registered], np.int64)[fov_id]
        crop_y, crop_x = index.options["patch_size"]
        z = np.floor(table["z"].to_numpy(np.float64)).astype(np.int64) - z_window // 2
        z = np.clip(z, 0, depth - z_window)
        y = np.floor(table["y"].to_numpy(np.float64)).astype(np.int64) - crop_y // 2
        x = np.floor(table["x"].to_numpy(np.float64)).astype(np.int64) - crop_x // 2
        t = table["t"].to_numpy(np.int64)
        self.corner = np.stack([fov_id, t, z, y, x], axis=1)
        self.size = (z_window, crop_y, crop_x)


class FloorDataset(Dataset[torch.Tensor]):
    """An item is a batch's ``(2B, 5)`` windows; it reads them raw, nothing else.

    Shapes:
        item ``(2B, 5)`` int64 ``(field, t, z, y, x)`` -> ``(2B, C_read, Z, Y, X)`` uint16.
    """

    def __init__(self, windows: Windows) -> None:
        self.positions = windows.positions
        self.channels = windows.channels
        self.size = windows.size
        self.volumes: dict[int, Volume] = {}

    def read(self, corners: np.ndarray) -> np.ndarray:
        span = int(self.channels[:, 1].max())
        out = np.empty((len(corners), span, *self.size), np.uint16)
        for number, (field, t, z, y, x) in enumerate(corners.tolist()):
            volume = self.volumes.get(field)
            if volume is None:
                volume = self.volumes[field] = self.positions[field].open()
            first, count = self.channels[field].tolist()
            out[number, :count] = volume.read((t, first, z, y, x), (1, count, *self.size))[0]
        return out

    def __getitem__(self, corners: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.read(corners))

    def __len__(self) -> int:
        raise TypeError("FloorDataset is read through a sampler of window batches")


# -- timing ------------------------------------------------------------------------------------


def epochs(loader: Iterable[Any], sampler: PairBatchSampler) -> Iterator[Any]:
    """``loader``'s batches over consecutive epochs of ``sampler``."""
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def rate(batches: Iterator[Any], warmup: int, count: int) -> float:
    """Batches per second over ``count`` batches after ``warmup`` batches."""
    for _ in range(warmup):
        next(batches)
    started = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count / (time.perf_counter() - started)


def check_first_batch(
    batch: dict[str, torch.Tensor],
    pairs: tuple[np.ndarray, np.ndarray],
    windows: Windows,
    index: CellIndex,
) -> None:
    """The loader's first batch has the floor's rows, and its crops are the floor's reads of
    them normalised with numpy (channels in common order)."""
    anchors, positives = pairs
    if not (
        np.array_equal(batch["anchor_row"].numpy(), anchors)
        and np.array_equal(batch["positive_row"].numpy(), positives)
    ):
        raise RuntimeError("the loader's first batch has other rows than the floor's")
    rows = np.concatenate([anchors, positives])
    raw = FloorDataset(windows).read(windows.corner[rows]).astype(np.float32)
    channels = index.channels
    for number, row in enumerate(rows.tolist()):
        field = int(windows.corner[row, 0])
        crop = raw[number, windows.channel_selection[field]]
        mean = np.array([index.table[f"norm_mean_{c}"].iat[row] for c in channels], np.float32)
        std = np.array([index.table[f"norm_std_{c}"].iat[row] for c in channels], np.float32)
        expected = (crop - mean[:, None, None, None]) / std[:, None, None, None]
        got = (batch["anchor"] if number < len(anchors) else batch["positive"])[
            number % len(anchors)
        ].numpy()
        if not np.allclose(got, expected, rtol=1e-5, atol=1e-5):
            raise RuntimeError(f"row {row}: the loader's crop differs from the floor's read")


def profile(
    module: ContrastDataModule, windows: Windows, pairs: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[float, float]:
    """Milliseconds per batch in this process: the dataset's item, the plain reads (best of
    the batches given, volumes opened beforehand)."""
    dataset = module.dataset
    if dataset is None:
        raise RuntimeError("ContrastDataModule.setup() has not run")
    floor = FloorDataset(windows)
    item, read = [], []
    for anchors, positives in pairs:
        dataset[(anchors, positives)]
        floor.read(windows.corner[np.concatenate([anchors, positives])])
    for anchors, positives in pairs:
        started = time.perf_counter()
        dataset[(anchors, positives)]
        item.append(time.perf_counter() - started)
        started = time.perf_counter()
        floor.read(windows.corner[np.concatenate([anchors, positives])])
        read.append(time.perf_counter() - started)
    return 1000 * min(item), 1000 * min(read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128, help="anchors per batch")
    parser.add_argument("--batches", type=int, default=150, help="timed batches per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="voxflow / floor alternations")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crop", type=int, nargs=2, default=[32, 32], help="Y X pixels")
    parser.add_argument("--z-window", type=int, default=3)
    parser.add_argument("--depth", type=int, default=3, help="Z planes of the fields")
    parser.add_argument("--size", type=int, default=192, help="field side in pixels")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--fields", type=int, default=4, help="fields of view per well")
    parser.add_argument("--cells", type=int, default=20, help="cells per field at t=0")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as folder:
        config, index = make_data(Path(folder), args)
        started = time.perf_counter()
        module = ContrastDataModule(
            config,
            index,
            SamplerConfig(batch_size=args.batch_size, seed=0),
            val_split="fov",
            val_fraction=0.1,
            z_window=args.z_window,
            crop=tuple(args.crop),
            num_workers=args.workers,
        )
        module.setup("fit")
        loader = module.train_dataloader()
        setup = time.perf_counter() - started
        windows = Windows(config, index, args.z_window)
        total = args.warmup + args.batches
        reference = module.train_sampler()
        pairs = list(itertools.islice(epochs(reference, reference), args.rounds * total))
        corners = [windows.corner[np.concatenate(p)] for p in pairs]
        floor = DataLoader(
            FloorDataset(windows),
            sampler=corners,
            batch_size=None,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        sampler = loader.sampler
        if not isinstance(sampler, PairBatchSampler):
            raise RuntimeError(f"unexpected loader sampler {type(sampler).__name__}")
        voxflow_batches = epochs(loader, sampler)
        check_first_batch(next(voxflow_batches), pairs[0], windows, index)
        floor_batches = iter(floor)
        voxflow_rates: list[float] = []
        floor_rates: list[float] = []
        for _ in range(args.rounds):
            # voxflow's first round already consumed one batch (the check): one fewer warm-up
            warmup = args.warmup - 1 if not voxflow_rates else args.warmup
            voxflow_rates.append(rate(voxflow_batches, warmup, args.batches))
            floor_rates.append(rate(floor_batches, args.warmup, args.batches))
            print(
                f"round {len(voxflow_rates)}: voxflow {voxflow_rates[-1]:.2f} batch/s, floor "
                f"{floor_rates[-1]:.2f} batch/s, ratio {voxflow_rates[-1] / floor_rates[-1]:.2f}",
                flush=True,
            )
        del voxflow_batches, floor_batches, loader, floor
        fresh = module.train_sampler()
        sampling = 1 / rate(epochs(fresh, fresh), 0, args.rounds * total)
        item_ms, read_ms = profile(module, windows, pairs[:10])
    voxflow_rate = float(np.mean(voxflow_rates))
    floor_rate = float(np.mean(floor_rates))
    pairs_per_batch = args.batch_size
    crops = 2 * pairs_per_batch
    print(
        f"\nbatch {args.batch_size} pairs ({crops} crops of 2 x {args.z_window} x "
        f"{args.crop[0]} x {args.crop[1]}), {args.workers} workers, {args.batches} batches "
        f"after {args.warmup} warm-up, mean of {args.rounds} round(s); setup {setup:.1f} s"
    )
    print(f"{'loader':58} {'batch/s':>8} {'pairs/s':>8} {'ms/batch':>9}")
    for name, value in (
        ("voxflow-contrast ContrastDataModule (normalised crops)", voxflow_rate),
        ("read floor: the same windows, voxflow-io Volume.read", floor_rate),
        ("PairBatchSampler alone (anchors + positives)", 1 / sampling),
    ):
        print(f"{name:58} {value:8.2f} {value * pairs_per_batch:8.0f} {1000 / value:9.2f}")
    print(
        f"\nin this process (no workers), best of 10 batches: dataset item {item_ms:.1f} ms "
        f"({1000 * item_ms / crops:.0f} us/crop), plain reads {read_ms:.1f} ms "
        f"({1000 * read_ms / crops:.0f} us/crop), ratio {read_ms / item_ms:.2f}"
    )
    share = sampling * voxflow_rate
    print(
        f"voxflow / floor = {voxflow_rate / floor_rate:.2f} (goal >= 0.8); sampler share of "
        f"batch time = {100 * share:.2f} % (goal < 1 %)"
    )


if __name__ == "__main__":
    main()
