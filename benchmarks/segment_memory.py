"""Peak memory of voxflow-segment's train and predict on a 2 GiB volume (goals: train < 3 GiB
for all processes with 2 loader workers; predict < 1.5 GiB), beside the volume's own size.

Writes a 512 x 1024 x 1024 float32 OME-Zarr image (2 GiB) and uint8 labels block by block
(never whole in RAM), then runs the real command lines in subprocesses and samples the
proportional set size (PSS: pages shared by forked workers count once) of the process tree
every 250 ms:

* ``voxflow-segment train``: ``--patch``^3 patches (default 128), batch 2, 2 workers, 20 steps
  of a small DynUNet (filters 8-64);
* ``voxflow-segment predict``: the checkpoint over the whole 2 GiB image (no overlap, to keep
  the run short; overlap changes the work, not the memory of a block), once per
  ``--predict-batch`` value (windows per forward pass: the network's activations, not the
  volume, set the peak).

Run: ``uv run --group bench python benchmarks/segment_memory.py [--shape 512 1024 1024]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from segment_loader import PeakMemory

from voxflow_io import create_ome_zarr


def write_volume(root: Path, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    chunks = (64, 256, 256)
    image = create_ome_zarr(
        root / "image.ome.zarr", shape=shape, dtype="float32", chunks=chunks, axes="zyx"
    )
    labels = create_ome_zarr(
        root / "labels.ome.zarr", shape=shape, dtype="uint8", chunks=chunks, axes="zyx"
    )
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], chunks[0]):
        depth = min(chunks[0], shape[0] - z)
        block = rng.normal(size=(depth, *shape[1:])).astype(np.float32)
        mask = (block > 1.5).astype(np.uint8)
        block += 2.0 * mask
        image.write_region((z, 0, 0), block)
        labels.write_region((z, 0, 0), mask)
    image.finish()
    labels.finish()
    return root / "image.ome.zarr", root / "labels.ome.zarr"


def run(command: list[str]) -> tuple[float, int]:
    """Wall time and peak PSS of a command and its children."""
    with PeakMemory() as memory:
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    return seconds, memory.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 1024, 1024])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--patch", type=int, default=128, help="cubic patch edge in voxels")
    parser.add_argument(
        "--predict-batch",
        type=int,
        nargs="+",
        default=[4, 1],
        help="windows per forward pass; the network's activations grow with it",
    )
    args = parser.parse_args()
    shape = tuple(args.shape)
    cli = [sys.executable, "-m", "voxflow_segment.cli"]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        image, labels = write_volume(root, shape)
        size = np.prod(shape) * 4 / 2**30
        print(
            f"volume: {shape} float32 = {size:.2f} GiB (+ uint8 labels), written in "
            f"{time.perf_counter() - started:.0f} s"
        )
        config = {
            "run_dir": str(root / "run"),
            "data": {
                "volumes": [{"id": "big", "image": str(image), "labels": {"fg": str(labels)}}],
                "targets": {"fg": {"classes": [0, 1]}},
            },
            "patch": {"size": [args.patch] * 3},
            "normalization": {"scheme": "fixed", "mean": [0.0], "std": [1.0]},
            "model": {
                "name": "dynunet",
                "kwargs": {
                    "kernel_size": [3, 3, 3, 3],
                    "strides": [1, 2, 2, 2],
                    "upsample_kernel_size": [2, 2, 2],
                    "filters": [8, 16, 32, 64],
                },
            },
            "sampler": {"batches_per_epoch": args.steps},
            "loader": {"batch_size": 2, "num_workers": 2},
            "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": args.steps},
            "logging": {"loggers": ["csv"], "previews": False},
        }
        path = root / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        train_s, train_peak = run([*cli, "train", "--config", str(path), "--no-progress"])
        checkpoint = root / "run" / "checkpoints" / "last.ckpt"
        predictions = []
        for batch in args.predict_batch:
            seconds, peak = run(
                [
                    *cli,
                    "predict",
                    "--checkpoint",
                    str(checkpoint),
                    "--input",
                    str(image),
                    "--output",
                    str(root / f"pred-{batch}.ome.zarr"),
                    "--overlap",
                    "0",
                    "--batch-size",
                    str(batch),
                    "--no-progress",
                    "--device",
                    "cpu",
                ]
            )
            predictions.append((batch, seconds, peak))
    print(f"\n{'command':44} {'seconds':>8} {'peak PSS':>9} {'goal':>8}")
    print(
        f"{f'train ({args.steps} steps, {args.patch}^3, 2 workers)':44} {train_s:8.0f} "
        f"{train_peak / 2**30:8.2f}G {'< 3G':>8}"
    )
    for batch, seconds, peak in predictions:
        name = f"predict (whole volume, --batch-size {batch})"
        print(f"{name:44} {seconds:8.0f} {peak / 2**30:8.2f}G {'< 1.5G':>8}")


if __name__ == "__main__":
    main()
