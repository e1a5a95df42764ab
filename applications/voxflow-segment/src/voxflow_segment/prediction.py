"""``predict``: sliding windows over any input size, block by block, into an OME-Zarr.

The output is cut into blocks aligned to its chunks (voxflow-slicing's block plan); each block
reads only its input region (block plus halo), runs the model on batches of windows with
optional flip test-time augmentation, blends the windows' class probabilities with Gaussian
weights and writes whole chunks. Memory is bounded by one block, never the volume. The
normalisation, the model and its classes come from the checkpoint alone.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from pydantic import ValidationError

from voxflow_io import create_ome_zarr
from voxflow_slicing import GridError, block_plan, importance_profiles, predict_block
from voxflow_transforms import RandFlip

from .config import RunConfig
from .errors import CheckpointError, DataError, OutputExistsError
from .module import build_network
from .normalize import build_normalizer
from .volumes import open_image

logger = logging.getLogger(__name__)

FLIPS_3D: tuple[tuple[int, ...], ...] = (
    (),
    (2,),
    (1,),
    (0,),
    (1, 2),
    (0, 2),
    (0, 1),
    (0, 1, 2),
)
"""Flip combinations over spatial axes (z, y, x) in the order ``--tta N`` takes them."""


@dataclass
class LoadedModel:
    """A network rebuilt from a checkpoint, with the config it was trained with."""

    config: RunConfig
    in_channels: int
    network: torch.nn.Module
    checkpoint: Path
    step: int


def load_model(
    checkpoint: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    expected: RunConfig | None = None,
) -> LoadedModel:
    """Rebuild the network of a voxflow-segment checkpoint (weights only: nothing is unpickled
    but tensors and plain data).

    Args:
        checkpoint: A ``.ckpt`` written by ``voxflow-segment train``.
        device: Where the network goes.
        expected: A run config the checkpoint must match (model, targets, patch mode).

    Raises:
        CheckpointError: a missing or damaged file, a checkpoint of something else, a model
            config different from ``expected``, weights that do not fit the network.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    torch_device = parse_device(device)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        OSError,
        EOFError,
        KeyError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:
        # torch.load reports damaged or foreign files with many exception types (a plain
        # text file gives KeyError); all mean the same to the user: not a readable checkpoint.
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read the checkpoint: {reason}") from exc
    if not isinstance(state, dict) or "voxflow_segment" not in state:
        raise CheckpointError(
            f"{path}: not a voxflow-segment checkpoint (no 'voxflow_segment' entry); found "
            f"keys {sorted(state) if isinstance(state, dict) else type(state).__name__}"
        )
    info = state["voxflow_segment"]
    if not isinstance(info, dict) or "config" not in info:
        raise CheckpointError(f"{path}: damaged voxflow-segment checkpoint: no stored config")
    try:
        config = RunConfig.model_validate(info["config"])
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise CheckpointError(
            f"{path}: the config stored in the checkpoint is invalid: {problems}"
        ) from exc
    missing = [
        where
        for where, holder, key in (
            ("voxflow_segment.in_channels", info, "in_channels"),
            ("voxflow_segment.model_fingerprint", info, "model_fingerprint"),
            ("state_dict", state, "state_dict"),
            ("global_step", state, "global_step"),
        )
        if not isinstance(holder, dict) or key not in holder
    ]
    if missing:
        raise CheckpointError(f"{path}: damaged voxflow-segment checkpoint: {missing} missing")
    if config.model_fingerprint() != info["model_fingerprint"]:
        raise CheckpointError(f"{path}: the stored model fingerprint does not match its config")
    if expected is not None and expected.model_fingerprint() != config.model_fingerprint():
        raise CheckpointError(
            f"{path}: was trained with a different model configuration: checkpoint model "
            f"{config.model.name} {config.model.kwargs}, targets "
            f"{ {k: v.classes for k, v in config.data.targets.items()} }; given model "
            f"{expected.model.name} {expected.model.kwargs}, targets "
            f"{ {k: v.classes for k, v in expected.data.targets.items()} }"
        )
    network = build_network(config, int(info["in_channels"]))
    weights = {
        key.removeprefix("net."): value
        for key, value in state["state_dict"].items()
        if key.startswith("net.")
    }
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the network of its config: {exc}"
        ) from exc
    network.eval().to(torch_device)
    return LoadedModel(config, int(info["in_channels"]), network, path, int(state["global_step"]))


def parse_device(device: str | torch.device) -> torch.device:
    """A torch device from ``"cpu"``, ``"cuda"``, ``"cuda:1"``…, checked to exist here.

    Raises:
        DataError: an unknown device name, or a CUDA device this machine does not have.
    """
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise DataError(
            f"device {device!r} is not a torch device name (expected 'cpu', 'cuda', 'cuda:1', "
            f"'auto'…)"
        ) from exc
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            raise DataError(f"device {device!r}: this machine has {count} CUDA device(s)")
    return parsed


@dataclass
class PredictResult:
    output: Path
    shape: tuple[int, ...]
    blocks: int
    windows: int
    seconds: float


def predict(
    checkpoint: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    tta: int = 1,
    probabilities: bool = False,
    overwrite: bool = False,
    batch_size: int | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    block_shape: Sequence[int] | None = None,
    device: str = "auto",
    level: int = 0,
    expected: RunConfig | None = None,
    progress: bool = True,
) -> PredictResult:
    """Predict ``input_path`` with a checkpoint and write an OME-Zarr to ``output``.

    Args:
        checkpoint: A voxflow-segment checkpoint.
        input_path: Any image voxflow-io opens, with the channels the model was trained on.
        output: The OME-Zarr to write (NGFF 0.5). It appears only when complete: blocks are
            written into a hidden ``.<name>.partial`` store that is renamed at the end.
        tta: Flip test-time augmentation: the first ``tta`` of the 8 (3D) or 4 (2D) flip
            combinations, batched, inverted by replaying the flips, averaged.
        probabilities: Write float16 class probabilities (``c`` axis: every class of every
            target) instead of label values.
        overwrite: Replace an existing ``output``.
        batch_size: Windows per forward pass (times ``tta``); default 1 on the CPU, 4 on a GPU.
        overlap: Window overlap.
        blend: Window weights: ``"gaussian"`` (nnU-Net's, sigma = patch/8), ``"hann"`` or
            ``"constant"`` (plain average, as MONAI's ``mode="constant"``).
        block_shape: Spatial block (= output chunk) shape; default: at least two patches
            and 128 voxels per axis (see :func:`output_chunks`). Memory grows with it.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        level: Pyramid level of the input.
        expected: A config the checkpoint must match.
        progress: Show a progress bar over blocks.

    Returns:
        A :class:`PredictResult`.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    output = Path(output)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise DataError(f"batch_size must be an integer >= 1, found {batch_size!r}")
    if not 0.0 <= overlap < 1.0:
        raise DataError(f"overlap must lie in [0, 1), found {overlap!r}")
    if blend not in ("gaussian", "hann", "constant"):
        raise DataError(f"blend must be 'gaussian', 'hann' or 'constant', found {blend!r}")
    if output.exists() and not overwrite:
        raise OutputExistsError(
            f"{output}: exists; pass overwrite=True (--overwrite) to replace it"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(checkpoint, device=device, expected=expected)
    if batch_size is None:
        # a CPU convolves windows one after the other at the same speed as a batch of them,
        # and a batch multiplies the activations (128^3: 1.9 GiB peak at 1 window, 3.1 at 4)
        on_cpu = next(model.network.parameters()).device.type == "cpu"
        batch_size = 1 if on_cpu else 4
    config = model.config
    image = open_image(Path(input_path), level)
    if image.channels != model.in_channels:
        raise DataError(
            f"{image.path}: has {image.channels} channel(s), the model was trained on "
            f"{model.in_channels}"
        )
    spatial = image.spatial_shape
    plane = config.patch.mode == "plane"
    if plane and len(spatial) != 3:
        raise DataError(
            f"{image.path}: plane-mode models predict 3D volumes, found shape {spatial}"
        )
    if not plane and len(spatial) != len(config.patch.size):
        raise DataError(
            f"{image.path}: spatial shape {spatial} has {len(spatial)} axes, the model takes "
            f"{len(config.patch.size)}D patches"
        )
    dims = len(spatial)
    flips = [f for f in FLIPS_3D if all(a < (2 if plane else dims) for a in f)]
    if not 1 <= tta <= len(flips):
        raise DataError(f"tta must lie in 1..{len(flips)} for this model, found {tta}")
    patch = [1, *config.patch.size] if plane else list(config.patch.size)
    normalizer = build_normalizer(config.normalization, image, None, config.seed)
    # An axis shorter than the patch is padded at its end with 0 after normalisation (the
    # mean intensity, as training's 'constant' border pads); only the input's extent is kept.
    grid = tuple(max(n, p) for n, p in zip(spatial, patch, strict=True))
    source = _Normalized(image, normalizer, grid)
    targets = config.data.targets
    channel_ranges: dict[str, tuple[int, int]] = {}
    first = 0
    for name, spec in targets.items():
        channel_ranges[name] = (first, first + len(spec.classes))
        first += len(spec.classes)
    if block_shape is None:
        chunks = output_chunks(spatial, patch)
    else:
        chunks = tuple(int(b) for b in block_shape)
        if len(chunks) != len(spatial) or any(
            b < 1 or b != v for b, v in zip(chunks, block_shape, strict=True)
        ):
            raise DataError(
                f"block_shape must be {len(spatial)} positive integers (one per spatial axis "
                f"of {spatial}), found {tuple(block_shape)}"
            )
        chunks = tuple(min(b, n) for b, n in zip(chunks, spatial, strict=True))
    try:
        plan = block_plan(grid, patch, chunks, overlap=[overlap if p > 1 else 0.0 for p in patch])
    except GridError as exc:
        raise DataError(
            f"{image.path}: cannot tile shape {spatial} with patch {patch}: {exc}"
        ) from exc
    profiles = importance_profiles(patch, blend)  # type: ignore[arg-type]
    forward = _Forward(model, [flips[i] for i in range(tta)], plane, device)
    names, axes, dtype, out_shape = _layout(config, spatial, probabilities, dims)
    partial = output.with_name(f".{output.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    writer = create_ome_zarr(
        partial,
        shape=out_shape,
        dtype=dtype,
        chunks=((1,) if len(out_shape) > dims else ()) + chunks,
        axes=axes,
        voxel_size=(((1.0,) if len(out_shape) > dims else ()) + tuple(image.voxel_size)),
        unit=image.volume.unit,
        channel_names=names if len(out_shape) > dims else None,
        name=output.name,
    )
    windows = 0
    bar = tqdm(plan, desc="predicting", unit="block", disable=not progress)
    for block in bar:
        if any(r.start >= n for r, n in zip(block.region, spatial, strict=True)):
            continue  # wholly inside the padding
        blended = predict_block(source, block, forward, patch, profiles, batch_size=batch_size)
        windows += len(block.windows)
        inside = tuple(
            slice(0, min(r.stop, n) - r.start) for r, n in zip(block.region, spatial, strict=True)
        )
        blended = blended[(slice(None), *inside)]
        if probabilities:
            data = blended.astype(np.float16)
        else:
            parts = []
            for name, (low, high) in channel_ranges.items():
                classes = np.asarray(targets[name].classes, dtype)
                parts.append(classes[blended[low:high].argmax(axis=0)])
            data = np.stack(parts) if len(parts) > 1 else parts[0]
        start = [r.start for r in block.region]
        if data.ndim > dims:
            start = [0, *start]
        writer.write_region(start, np.ascontiguousarray(data))
    bar.close()
    group = zarr.open_group(str(partial), mode="r+")
    group.attrs["voxflow"] = {
        "kind": "probabilities" if probabilities else "labels",
        "targets": {
            name: {
                "classes": spec.classes,
                "class_names": spec.names(),
                "channels": list(
                    channel_ranges[name]
                    if probabilities
                    else (list(targets).index(name), list(targets).index(name) + 1)
                ),
            }
            for name, spec in targets.items()
        },
        "checkpoint": str(model.checkpoint),
        "model_fingerprint": config.model_fingerprint(),
        "input": str(image.path),
        "tta": tta,
        "blend": blend,
        "normalization": normalizer.describe(),
    }
    writer.finish()
    if output.is_dir():
        shutil.rmtree(output)
    elif output.exists():
        output.unlink()
    partial.rename(output)
    seconds = time.perf_counter() - started
    logger.info("predicted %s -> %s in %.1f s (%d blocks)", image.path, output, seconds, len(plan))
    return PredictResult(output, tuple(out_shape), len(plan), windows, seconds)


def _layout(
    config: RunConfig, spatial: tuple[int, ...], probabilities: bool, dims: int
) -> tuple[list[str], str, Any, tuple[int, ...]]:
    axes = "zyx"[-dims:]
    targets = config.data.targets
    if probabilities:
        names = [f"{t}/{n}" for t, spec in targets.items() for n in spec.names()]
        return names, "c" + axes, np.float16, (len(names), *spatial)
    top = max(max(spec.classes) for spec in targets.values())
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    if len(targets) == 1:
        return list(targets), axes, dtype, tuple(spatial)
    return list(targets), "c" + axes, dtype, (len(targets), *spatial)


def output_chunks(spatial: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Output chunk (= block) shape: at least two patches and 128 voxels along each axis the
    windows span (bigger blocks predict fewer windows twice at their borders), 64 slices
    along the axis of depth-1 plane windows."""
    return tuple(
        min(n, max(2 * p, 128) if p > 1 else 64) for n, p in zip(spatial, patch, strict=True)
    )


class _Normalized:
    """The input through the checkpoint's normaliser, zero-padded at the end of each spatial
    axis up to ``grid``, as an ``ArrayLike`` ``(C, *grid)`` float32."""

    def __init__(self, image: Any, normalizer: Any, grid: tuple[int, ...]) -> None:
        self.image = image
        self.normalizer = normalizer
        self.shape = (image.channels, *grid)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        boxes: list[slice] = list(key[1:])  # (Ellipsis or the channel slice, *spatial)
        spatial = self.image.spatial_shape
        out = np.zeros((self.shape[0], *(b.stop - b.start for b in boxes)), np.float32)
        inside = [slice(b.start, min(b.stop, n)) for b, n in zip(boxes, spatial, strict=True)]
        if all(i.stop > i.start for i in inside):
            data = self.normalizer(self.image[(slice(None), *inside)])
            if not np.isfinite(data).all():
                where = ", ".join(
                    f"{a} {i.start}:{i.stop}"
                    for a, i in zip("zyx"[-len(inside) :], inside, strict=True)
                )
                raise DataError(
                    f"{self.image.path}: the region {where} holds NaN or infinite intensities"
                )
            out[(slice(None), *(slice(0, i.stop - i.start) for i in inside))] = data
        return out


class _Forward:
    """Model forward over a numpy batch with flip TTA: ``(B, C, *patch)`` -> class
    probabilities ``(B, sum of classes, *patch)`` float32 (softmax per target, averaged over
    the flips after undoing them by replaying the same flips)."""

    def __init__(
        self, model: LoadedModel, flips: Sequence[tuple[int, ...]], plane: bool, device: str
    ) -> None:
        self.model = model
        self.flips = list(flips)
        self.plane = plane
        self.device = torch.device(device)
        self.targets = list(model.config.data.targets)
        self.flip = RandFlip(("image",), 1.0)

    def _params(self, batch: int, dims: int) -> dict[str, torch.Tensor]:
        flip = torch.zeros(batch * len(self.flips), dims, dtype=torch.bool)
        for i, axes in enumerate(self.flips):
            for axis in axes:
                flip[i * batch : (i + 1) * batch, axis] = True
        return {"apply": flip.any(dim=1), "flip": flip}

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        image = torch.from_numpy(batch).to(self.device)
        if self.plane:
            image = image[:, :, 0]
        count, dims = image.shape[0], image.ndim - 2
        params = self._params(count, dims)
        repeated = image.repeat(len(self.flips), *[1] * (image.ndim - 1))
        flipped = self.flip.replay({"image": repeated}, params)["image"]
        outputs = self.model.network(flipped)
        probabilities = torch.cat(
            [torch.softmax(outputs[t].float(), dim=1) for t in self.targets], dim=1
        )
        restored = self.flip.replay({"image": probabilities}, params)["image"]
        mean = restored.reshape(len(self.flips), count, *restored.shape[1:]).mean(dim=0)
        if self.plane:
            mean = mean.unsqueeze(2)
        return mean.cpu().numpy()
