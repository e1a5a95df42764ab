"""voxflow-segment ``predict`` end to end against MONAI's sliding windows (issue 15).

CPU mode (default). Input: a uint16 OME-Zarr (zstd, 64^3 chunks; smooth structure plus noise,
never zero), written once per size and cached under ``/tmp/voxflow-bench``. Model: one
``Conv3d(1 -> 2, kernel 3, padding 1)`` with fixed random weights, so that reading, stitching
and writing dominate; normalisation ``(x - 20000) / 5000`` ("fixed"); window ``--patch``^3
(default 128^3, nnU-Net's), overlap 0.5, one window per forward. Every method ends with the
same artefact, an OME-Zarr of uint8 labels (argmax of the blended class probabilities):

* ``voxflow``: ``predict(LoadedModel, input, output, accelerator="cpu", blend="gaussian")``;
* ``monai-ram``: the volume read with zarr-python into a torch tensor, normalised,
  ``monai.inferers.sliding_window_inference(mode="gaussian")`` on softmax(conv), argmax in Z
  slabs, written with voxflow-io (reading and writing count in its time);
* ``monai-zarr``: the same tensor through ``PatchInferer(SlidingWindowSplitter,
  ZarrAvgMerger)`` (MONAI's streaming merger: plain average, its only mode), argmax of the
  merged zarr in Z slabs, written the same way.

Each (method, size) runs in a fresh child process (this script with ``--child``) that reports
wall time, peak resident memory (``VmHWM`` and ``ru_maxrss``) and read amplification
(voxflow: ``PredictResult.read_amplification``; MONAI reads the volume once into RAM: 1.0 by
construction). A check on the first size compares outputs: voxflow and MONAI in RAM with
constant weights as probabilities (the same plain average: equal to float16 precision), the
gaussian labels of voxflow and MONAI, and the ZarrAvgMerger labels against voxflow's constant
probabilities.

GPU mode (``--gpu``): DynUNet (nnU-Net 3d_fullres kernels and strides, 1 channel in, 2 classes,
random weights) at 128^3, fp16, on a 256x512x512 volume: voxflow ``predict(accelerator="gpu",
precision="16")`` into zarr against MONAI ``sliding_window_inference(sw_device="cuda",
device="cuda")`` under fp16 autocast, with the GPU's utilisation sampled every 50 ms.

    uv run --group bench python benchmarks/predict.py [--size 64x1024x1024 ...] [--quick]
    uv run --group bench python benchmarks/predict.py --gpu [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path("/tmp/voxflow-bench")
SIZES = ((64, 1024, 1024), (256, 1024, 1024))
QUICK = (64, 256, 256)
GPU_SIZE = (256, 512, 512)
MEAN, STD = 20000.0, 5000.0
CPU_METHODS = ("voxflow", "monai-ram", "monai-zarr")
GPU_METHODS = ("voxflow-gpu", "monai-gpu")
# nnU-Net 3d_fullres at 128^3: six levels, the first at full resolution
DYNUNET = {
    "kernel_size": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
    "upsample_kernel_size": [[2, 2, 2]] * 5,
    "filters": [32, 64, 128, 256, 320, 320],
    "norm_name": "instance",
}


def parse_size(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"--size must look like 64x1024x1024, found {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def name_of(size: tuple[int, ...]) -> str:
    return "x".join(map(str, size))


# -- children ---------------------------------------------------------------------------------


def make_input(path: Path, size: tuple[int, ...]) -> None:
    """Write the uint16 OME-Zarr ``(Z, Y, X)`` (64^3 zstd chunks) once, atomically."""
    from voxflow_io import create_ome_zarr

    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    rng = np.random.default_rng(0)
    y = np.arange(size[1], dtype=np.float32)[:, None]
    x = np.arange(size[2], dtype=np.float32)[None, :]
    with create_ome_zarr(
        partial, shape=size, dtype=np.uint16, chunks=(64, 64, 64), axes="zyx"
    ) as writer:
        for z0 in range(0, size[0], 64):
            z = np.arange(z0, min(z0 + 64, size[0]), dtype=np.float32)[:, None, None]
            slab = 20000 + 6000 * np.sin(z / 17) * np.cos(y / 23) + 4000 * np.sin(x / 31 + z / 40)
            slab += rng.normal(0, 400, size=slab.shape).astype(np.float32)
            writer.write_region((z0, 0, 0), np.clip(slab, 1, 65535).astype(np.uint16))
    os.rename(partial, path)


def tiny_network() -> Any:
    """One ``Conv3d(1, 2, 3, padding=1)``, seeded; ``forward`` returns ``{"structures": logits}``
    as voxflow-segment's networks do in eval mode.

    Shapes:
        ``(B, 1, Z, Y, X)`` float32 -> ``{"structures": (B, 2, Z, Y, X)}`` float32.
    """
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"structures": self.conv(image)}

        def probabilities(self, image: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.conv(image), dim=1)

    return Tiny().eval()


def dynunet_network() -> Any:
    """MONAI DynUNet (``DYNUNET``), 1 -> 2 channels, seeded, with the same two entry points."""
    import torch
    from monai.networks.nets import DynUNet

    class Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.backbone = DynUNet(3, 1, 2, **DYNUNET)  # type: ignore[arg-type]

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"structures": self.backbone(image)}

        def probabilities(self, image: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.backbone(image).float(), dim=1)

    return Heads().eval()


def loaded_model(network: Any, patch: int, work: Path) -> Any:
    """A ``LoadedModel`` around ``network`` with a run config as ``tests/conftest.py`` builds
    it; the checkpoint file (the network's weights) only identifies the run."""
    import torch

    from voxflow_segment.config import RunConfig
    from voxflow_segment.prediction import LoadedModel

    config = RunConfig.model_validate(
        {
            "run_dir": str(work / "run"),
            "seed": 3,
            "data": {
                "volumes": [{"id": "v", "image": "unused.ome.zarr", "labels": {"structures": "x"}}],
                "targets": {"structures": {"classes": [0, 1]}},
            },
            "patch": {"size": [patch] * 3},
            "normalization": {"scheme": "fixed", "mean": [MEAN], "std": [STD]},
            "deep_supervision": False,
        }
    )
    checkpoint = work / f"{type(network).__name__}-{patch}.ckpt"
    if not checkpoint.exists():
        torch.save(network.state_dict(), checkpoint)
    return LoadedModel(config, 1, network, checkpoint, 0)


def read_input(path: Path) -> Any:
    """The whole level 0 with zarr-python, normalised: ``(1, 1, Z, Y, X)`` float32 tensor."""
    import torch
    import zarr

    raw = zarr.open_group(str(path), mode="r")["0"][:]
    image = torch.from_numpy(raw.astype(np.float32))
    del raw
    image.sub_(MEAN).div_(STD)
    return image[None, None]


def write_labels(path: Path, probabilities: Any, chunks: tuple[int, ...]) -> None:
    """Argmax of ``(1, 2, Z, Y, X)`` class probabilities (a tensor, or a zarr array read 16
    slices at a time), written as a ``(Z, Y, X)`` uint8 OME-Zarr with ``chunks``."""
    import torch

    from voxflow_io import create_ome_zarr

    shape = tuple(probabilities.shape[2:])
    labels = np.empty(shape, np.uint8)
    for z0 in range(0, shape[0], 16):
        slab = torch.as_tensor(np.asarray(probabilities[0, :, z0 : z0 + 16]))
        labels[z0 : z0 + 16] = slab.argmax(dim=0).to(torch.uint8).numpy()
    with create_ome_zarr(path, shape=shape, dtype=np.uint8, chunks=chunks, axes="zyx") as writer:
        writer.write_region((0, 0, 0), labels)


def write_probabilities(path: Path, probabilities: Any) -> None:
    """``(2, Z, Y, X)`` float32 tensor -> a zarr of float16 ``(2, Z, Y, X)`` (check runs)."""
    import zarr

    zarr.save_array(str(path), probabilities.half().numpy())


def gpu_sampler(stop: threading.Event, samples: list[float]) -> None:
    """Append the GPU's busy % every 50 ms until ``stop``: ``torch.cuda.utilization`` (NVML
    through pynvml) where it answers, else ``nvidia-smi -lms 50``."""
    import torch

    try:
        torch.cuda.utilization()
    except ModuleNotFoundError:  # no pynvml in this environment
        process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "-lms",
                "50",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if stop.is_set():
                break
            samples.append(float(line.split(",")[0]))
        process.terminate()
        process.wait()
        return
    while not stop.is_set():
        samples.append(float(torch.cuda.utilization()))
        time.sleep(0.05)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one method (``spec["method"]``) and report what it measured."""
    method = spec["method"]
    size = tuple(spec["size"])
    work = Path(spec["work"])
    source = Path(spec["input"])
    output = Path(spec["output"])
    if method == "make":
        make_input(source, size)
        return {}
    import torch

    patch = spec["patch"]
    blend = spec["blend"]
    chunks = tuple(min(n, max(2 * patch, 128)) for n in size)  # voxflow's output chunks
    report: dict[str, Any] = {"read_amplification": 1.0}
    samples: list[float] = []
    stop = threading.Event()
    sampler = None
    if method.endswith("-gpu"):
        network = dynunet_network()
        sampler = threading.Thread(target=gpu_sampler, args=(stop, samples), daemon=True)
    else:
        network = tiny_network()
    # each method imports what it needs before the clock starts
    if method.startswith(("voxflow", "imports")):
        from lightning.fabric import Fabric  # noqa: F401  (predict imports it lazily)

        from voxflow_segment.prediction import predict
    else:
        from monai.inferers import PatchInferer, SlidingWindowSplitter, sliding_window_inference
        from monai.inferers.merger import ZarrAvgMerger

        import voxflow_io  # noqa: F401
    if sampler is not None:
        sampler.start()  # samples the run only, not the imports
    begin = time.perf_counter()
    if method == "imports":
        pass
    elif method.startswith("voxflow"):
        gpu = method.endswith("-gpu")
        result = predict(
            loaded_model(network, patch, work),
            source,
            output,
            overwrite=True,
            probabilities=spec["probabilities"],
            overlap=0.5,
            blend=blend,
            accelerator="gpu" if gpu else "cpu",
            precision="16" if gpu else "32",
            batch_size=spec["batch_size"],
            progress=False,
        )
        report["read_amplification"] = result.read_amplification
        report["windows"] = result.windows
    elif method in ("monai-ram", "monai-gpu"):
        gpu = method == "monai-gpu"
        device = torch.device("cuda" if gpu else "cpu")
        network.to(device)
        image = read_input(source)
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.float16, enabled=gpu),
        ):
            merged = sliding_window_inference(
                image,
                roi_size=(patch,) * 3,
                sw_batch_size=spec["batch_size"],
                predictor=network.probabilities,
                overlap=0.5,
                mode=blend,
                sw_device=device,
                device=device,
            )
        assert isinstance(merged, torch.Tensor)
        del image
        merged = merged.float().cpu()
        if spec["probabilities"]:
            write_probabilities(output, merged[0])
        else:
            write_labels(output, merged, chunks)
    elif method == "monai-zarr":
        image = read_input(source)
        inferer = PatchInferer(
            splitter=SlidingWindowSplitter(patch_size=(patch,) * 3, overlap=0.5),
            merger_cls=ZarrAvgMerger,
            batch_size=spec["batch_size"],
            store=str(work / "merger-merged.zarr"),
            value_store=str(work / "merger-values.zarr"),
            count_store=str(work / "merger-counts.zarr"),
        )
        with torch.no_grad():
            merged = inferer(image, network.probabilities)
        del image
        write_labels(output, merged, chunks)
    else:
        raise ValueError(f"--child: unknown method {method!r}")
    if method.endswith("-gpu"):
        torch.cuda.synchronize()
        stop.set()
        assert sampler is not None
        sampler.join()
        report["gpu_busy_percent"] = float(np.mean(samples)) if samples else float("nan")
        report["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    report["seconds"] = time.perf_counter() - begin
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]
    report["vmhwm_mib"] = int(status) / 1024
    report["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


# -- parent -----------------------------------------------------------------------------------


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` in a fresh interpreter; its last stdout line is the JSON report."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"child {spec['method']} {name_of(spec['size'])} failed "
            f"(exit {completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def spec_for(method: str, size: tuple[int, ...], args: argparse.Namespace, **extra: Any) -> dict:
    work = ROOT / "runs"
    work.mkdir(parents=True, exist_ok=True)
    tag = extra.pop("tag", method)
    output = work / f"{tag}-{name_of(size)}.ome.zarr"
    for stale in (output, *work.glob("merger-*.zarr")):
        if stale.exists():
            shutil.rmtree(stale)
    return {
        "method": method,
        "size": list(size),
        "patch": args.patch,
        "blend": "gaussian",
        "probabilities": False,
        "batch_size": args.batch_size,
        "work": str(work),
        "input": str(ROOT / f"input-{name_of(size)}.ome.zarr"),
        "output": str(output),
        **extra,
    }


def ensure_input(size: tuple[int, ...], args: argparse.Namespace) -> None:
    spec = spec_for("make", size, args)
    if not Path(spec["input"]).exists():
        print(f"writing {spec['input']} ({name_of(size)} uint16, 64^3 zstd chunks)", flush=True)
        run_child(spec)


def level0(path: str) -> Any:
    import zarr

    return zarr.open_group(path, mode="r")["0"]


def check(size: tuple[int, ...], args: argparse.Namespace, outputs: dict[str, str]) -> None:
    """Compare outputs on ``size`` (Z slab by Z slab, to keep this process small)."""
    import zarr

    runs = {}
    for method in ("voxflow", "monai-ram"):
        spec = spec_for(method, size, args, blend="constant", probabilities=True, tag=f"c-{method}")
        run_child(spec)
        runs[method] = spec["output"]
    voxflow_probabilities = level0(runs["voxflow"])  # (2, Z, Y, X) float16
    monai_probabilities = zarr.open_array(runs["monai-ram"], mode="r")  # (2, Z, Y, X) float16
    gaussian = [level0(outputs[m]) for m in ("voxflow", "monai-ram", "monai-zarr")]
    largest, total, decided = 0.0, 0, 0
    differ = {"gaussian voxflow vs MONAI in RAM": 0, "MONAI zarr merger vs voxflow constant": 0}
    for z0 in range(0, size[0], 16):
        z = slice(z0, z0 + 16)
        ours = np.asarray(voxflow_probabilities[:, z], np.float32)
        theirs = np.asarray(monai_probabilities[:, z], np.float32)
        largest = max(largest, float(np.abs(ours - theirs).max()))
        voxflow_labels, monai_labels, merger_labels = (np.asarray(a[z]) for a in gaussian)
        differ["gaussian voxflow vs MONAI in RAM"] += int((voxflow_labels != monai_labels).sum())
        constant_labels = (ours[1] > ours[0]).astype(np.uint8)
        mismatch = merger_labels != constant_labels
        differ["MONAI zarr merger vs voxflow constant"] += int(mismatch.sum())
        decided += int((mismatch & (np.abs(ours[1] - ours[0]) > 2e-3)).sum())
        total += voxflow_labels.size
    print(f"\ncheck on {name_of(size)}:")
    print(
        f"  constant weights, class probabilities (float16): voxflow vs MONAI in RAM max |diff| "
        f"{largest:.2e} ({'equal to float16 precision' if largest <= 2e-3 else 'DIFFERENT'})"
    )
    for what, count in differ.items():
        print(f"  labels, {what}: {count:,} of {total:,} voxels differ ({count / total:.2e})")
    print(
        f"  of which voxflow's float16 probabilities are more than 2e-3 apart (not a rounding "
        f"tie): {decided:,}"
    )


def table(rows: list[tuple[str, str, dict[str, Any]]], gpu: bool) -> None:
    extra = " GPU busy % | GPU peak GiB |" if gpu else ""
    print(
        "\n| size | method | s | peak RSS MiB (VmHWM) | ru_maxrss MiB | read ampl. "
        f"| voxflow / peer (s) | voxflow / peer (RSS) |{extra}"
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if gpu else ""))
    for size, method, report in rows:
        ours = next(r for s, m, r in rows if s == size and m.startswith("voxflow"))
        time_ratio = ours["seconds"] / report["seconds"]
        rss_ratio = ours["vmhwm_mib"] / report["vmhwm_mib"]
        line = (
            f"| {size} | {method} | {report['seconds']:.1f} | {report['vmhwm_mib']:.0f} | "
            f"{report['maxrss_mib']:.0f} | {report['read_amplification']:.2f} | "
            f"{time_ratio:.2f} | {rss_ratio:.2f} |"
        )
        if gpu:
            line += f" {report['gpu_busy_percent']:.0f} | {report['gpu_peak_gib']:.1f} |"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=parse_size, action="append", help="ZxYxX (repeatable)")
    parser.add_argument("--quick", action="store_true", help=f"{name_of(QUICK)} only (smoke)")
    parser.add_argument("--patch", type=int, default=128, help="window edge (default 128)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per forward")
    parser.add_argument("--gpu", action="store_true", help="DynUNet fp16 on CUDA")
    parser.add_argument("--no-check", action="store_true", help="skip the output comparison")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.batch_size is None:
        args.batch_size = 4 if args.gpu else 1
    sizes = [QUICK] if args.quick else args.size or (list(SIZES) if not args.gpu else [GPU_SIZE])
    methods = GPU_METHODS if args.gpu else CPU_METHODS
    print(
        f"patch {args.patch}^3, overlap 0.5, batch {args.batch_size}, "
        f"{'DynUNet fp16 on CUDA' if args.gpu else 'one Conv3d(1->2, k3) on the CPU'}, "
        f"cores {len(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if not args.gpu:
        floor = run_child(spec_for("imports", sizes[0], args))
        print(
            f"floor: a voxflow child that only imports torch, voxflow-segment (MONAI, Lightning) "
            f"and builds the model: peak RSS {floor['vmhwm_mib']:.0f} MiB",
            flush=True,
        )
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for number, size in enumerate(sizes):
        ensure_input(size, args)
        outputs = {}
        for method in methods:
            spec = spec_for(method, size, args)
            report = run_child(spec)
            outputs[method] = spec["output"]
            rows.append((name_of(size), method, report))
            print(f"{name_of(size)} {method}: {json.dumps(report)}", flush=True)
        if number == 0 and not args.gpu and not args.no_check:
            check(size, args, outputs)
    table(rows, args.gpu)


if __name__ == "__main__":
    main()
