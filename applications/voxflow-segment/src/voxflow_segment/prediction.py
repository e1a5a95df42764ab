"""``predict``: sliding windows over any input size, block by block, into an OME-Zarr.

The output is cut into blocks aligned to its chunks (voxflow-slicing's block plan, in Morton
order); each block reads only its input region (block plus halo, through a bounded cache of
input chunks), runs the model on batches of windows with optional flip test-time augmentation,
blends the windows' class probabilities on the model's device and writes whole chunks.
Processes of a DDP run take disjoint runs of blocks and write them straight to the output;
finished blocks are recorded so that a killed run resumes (see ``predict_output``). Memory is
bounded by one block and the cache, never the volume. The normalisation, the model and its
classes come from the checkpoint alone.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from voxflow_io import OmeZarrWriter, create_ome_zarr
from voxflow_slicing import Accumulator, Block, ChunkCache, GridError, block_plan
from voxflow_transforms import RandFlip
from voxflow_utils import quiet_lightning

from .config import RunConfig
from .errors import CheckpointError, DataError
from .module import build_network
from .normalize import build_normalizer
from .predict_output import (
    DoneRecord,
    file_digest,
    finish_output,
    inspect_output,
    raise_refusal,
    remove_local,
    start_records,
)
from .volumes import ChannelFirst, SpatialOnly, open_image, open_mask, read_mask

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
    """What one ``predict`` call did (summed over every rank).

    Attributes:
        output: Where the OME-Zarr is (path or URL).
        shape: Its level-0 shape.
        blocks: Blocks in the plan.
        predicted: Blocks this call predicted.
        empty: Blocks skipped because their input was all zero or outside the mask (written
            as the fill value 0).
        resumed: Blocks found finished by an earlier, interrupted call.
        windows: Windows predicted (times ``tta`` forward passes each).
        grid_windows: Windows of the sliding-window grid over the whole input; ``windows``
            exceeds it by the windows across block borders, predicted in each block.
        seconds: Wall time.
        read_amplification: Input bytes decoded / input bytes read by this call's blocks'
            input regions at least once (1.0 is ideal; halos read twice push it up).
        world_size: Processes that predicted.
        rank: This process's rank (0 in a single-process run).
    """

    output: str
    shape: tuple[int, ...]
    blocks: int
    predicted: int
    empty: int
    resumed: int
    windows: int
    grid_windows: int
    seconds: float
    read_amplification: float
    world_size: int
    rank: int


DEFAULT_CACHE_BYTES = 256 << 20
"""Input chunk cache per process (see :func:`predict`)."""


def predict(
    checkpoint: str | os.PathLike[str] | LoadedModel,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    tta: int = 1,
    probabilities: bool = False,
    overwrite: bool = False,
    batch_size: int | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    chunks: Sequence[int] | None = None,
    block_shape: Sequence[int] | None = None,
    sharded: bool = False,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    precision: str = "32",
    level: int = 0,
    mask: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    expected: RunConfig | None = None,
    progress: bool = True,
) -> PredictResult:
    """Predict ``input_path`` with a checkpoint and write an OME-Zarr to ``output``.

    The output is cut into blocks aligned to its chunks, visited in Morton order (neighbours
    in turn, so input chunks under a halo are decoded once and kept in a bounded cache). Each
    block's windows are predicted and blended on the model's device and written straight to
    the output; no process holds more than a few blocks. With ``devices`` > 1 (or several
    nodes) each process takes a disjoint, contiguous run of that order; there is no merge
    pass. Finished blocks are recorded in the output: a killed run started again with the same
    arguments skips them and ends with the same bytes as an uninterrupted run.

    Args:
        checkpoint: A voxflow-segment checkpoint (local file), or a :class:`LoadedModel`
            (from :func:`load_model`, or a network of your own with a run config; its
            ``checkpoint`` file identifies the run for resuming).
        input_path: Any image voxflow-io opens (path or URL), with the channels the model was
            trained on.
        output: The OME-Zarr to write (NGFF 0.5), a path or a URL (``s3://``, ``gs://``);
            marked "being written" (readers refuse it) until every block is done.
        tta: Flip test-time augmentation: the first ``tta`` of the 8 (3D) or 4 (2D) flip
            combinations, batched, inverted by replaying the flips, averaged.
        probabilities: Write float16 class probabilities (``c`` axis: every class of every
            target) instead of label values.
        overwrite: Replace an existing ``output`` (finished or not) instead of refusing it or
            resuming it.
        batch_size: Windows per forward pass (times ``tta``); default 1 on the CPU, 4 on a GPU.
        overlap: Window overlap.
        blend: Window weights: ``"gaussian"`` (nnU-Net's, sigma = patch/8), ``"hann"`` or
            ``"constant"`` (plain average, as MONAI's ``mode="constant"``).
        chunks: Spatial output chunk shape; default: ``block_shape`` where it is given, else
            at least two patches and 128 voxels per axis (see :func:`output_chunks`).
        block_shape: Spatial block shape, the unit of work: a multiple of ``chunks`` per axis
            (or the whole axis). Windows across a block border are predicted once in each
            block they overlap, so larger blocks predict fewer windows twice; memory grows
            with them. Default: ``chunks`` on the CPU; on a GPU, where the model's time
            dominates, the multiple of ``chunks`` of at least four patches per axis (see
            :func:`default_blocks`).
        sharded: Store each block as one shard of a sharded Zarr v3 array (inner chunks
            ``chunks``): one object per block instead of one per chunk, which object stores
            and file systems with millions of files prefer.
        accelerator: ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"gpu"``/``"cuda"``.
        devices: Processes per node (one per GPU); > 1 runs DDP through Lightning Fabric
            (``gloo`` on CPUs, ``nccl`` on GPUs), launched as Lightning launches training.
        num_nodes: Nodes (set ``MASTER_ADDR``, ``NODE_RANK``… as for ``train``).
        precision: ``"32"``, ``"bf16"`` or ``"16"`` (autocast of the forward pass; blending
            is float32).
        level: Pyramid level of the input.
        mask: Optional mask (path or URL), of the input's spatial shape or an integer
            fraction of it: blocks whose mask is all zero are not predicted, and voxels
            outside it are written as 0.
        storage_options: fsspec options for URL inputs, masks and outputs
            (``{"endpoint_url": ..., "key": ..., "secret": ..., "anon": ...}``); the
            standard ``AWS_*`` variables work without them.
        cache_bytes: Bytes of decoded input chunks each process keeps.
        expected: A config the checkpoint must match.
        progress: Show a progress bar over blocks (rank 0).

    Returns:
        A :class:`PredictResult`.

    Raises:
        DataError: Bad arguments or input (every message names the file or the option).
        CheckpointError: A missing, damaged or mismatched checkpoint.
        OutputExistsError: ``output`` exists and is not an unfinished prediction of this run.
        PredictResumeError: ``output`` holds an unfinished prediction of another run
            (other checkpoint, input or options).
    """
    started = time.perf_counter()
    _check_arguments(batch_size, overlap, blend, devices, num_nodes, precision, cache_bytes)
    location = str(output)
    options = dict(storage_options) if storage_options else None
    fabric = _launch(accelerator, devices, num_nodes)
    rank, world = fabric.global_rank, fabric.world_size
    if isinstance(checkpoint, LoadedModel):
        model = checkpoint
        model.network.eval().to(fabric.device)
    else:
        model = load_model(checkpoint, device=fabric.device, expected=expected)
    if batch_size is None:
        # a CPU convolves windows one after the other at the same speed as a batch of them,
        # and a batch multiplies the activations (128^3: 1.9 GiB peak at 1 window, 3.1 at 4)
        batch_size = 1 if fabric.device.type == "cpu" else 4
    config = model.config
    image = open_image(input_path, level, options)
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
    mask_view = None if mask is None else open_mask(mask, level, spatial, options)
    normalizer = build_normalizer(config.normalization, image, None, config.seed)
    # An axis shorter than the patch is padded at its end with 0 after normalisation (the
    # mean intensity, as training's 'constant' border pads); only the input's extent is kept.
    grid = tuple(max(n, p) for n, p in zip(spatial, patch, strict=True))
    given = None if block_shape is None else _spatial_shape(block_shape, "block_shape", spatial)
    if chunks is not None:
        chunks = _spatial_shape(chunks, "chunks", spatial)
    else:
        chunks = given if given is not None else output_chunks(spatial, patch)
    if given is None:
        blocks = chunks if fabric.device.type == "cpu" else default_blocks(spatial, patch, chunks)
    else:
        blocks = given
        misaligned = [
            axis
            for axis, (b, c, n) in enumerate(zip(blocks, chunks, spatial, strict=True))
            if b % c and b < n
        ]
        if misaligned:
            raise DataError(
                f"block_shape {blocks} must be a multiple of the output chunks {chunks} along "
                f"every axis (or span the axis): axes {misaligned} are not"
            )
    try:
        plan = block_plan(
            grid,
            patch,
            blocks,
            overlap=[overlap if p > 1 else 0.0 for p in patch],
            order="morton",
        )
    except GridError as exc:
        raise DataError(
            f"{image.path}: cannot tile shape {spatial} with patch {patch}: {exc}"
        ) from exc
    names, axes, dtype, out_shape = _layout(config, spatial, probabilities, dims)
    identity = {
        "checkpoint_sha256": file_digest(model.checkpoint),
        "input": str(input_path),
        "input_shape": list(image.shape),
        "input_dtype": str(image.dtype),
        "level": level,
        "mask": None if mask is None else str(mask),
        "tta": tta,
        "probabilities": probabilities,
        "overlap": overlap,
        "blend": blend,
        "chunks": list(chunks),
        "block_shape": list(blocks),
        "sharded": sharded,
        "precision": precision,
    }
    attributes = _attributes(config, model, image, normalizer, probabilities, tta, blend)
    decision = fabric.broadcast(
        inspect_output(location, identity, overwrite=overwrite, storage_options=options)
        if rank == 0
        else None,
        src=0,
    )
    raise_refusal(decision)
    if rank == 0 and decision.action == "create":
        remove_local(location)
        create_ome_zarr(
            location,
            shape=out_shape,
            dtype=dtype,
            chunks=((1,) if len(out_shape) > dims else ()) + chunks,
            shards=(((1,) if len(out_shape) > dims else ()) + blocks) if sharded else None,
            axes=axes,
            voxel_size=(((1.0,) if len(out_shape) > dims else ()) + tuple(image.voxel_size)),
            unit=image.volume.unit,
            channel_names=names if len(out_shape) > dims else None,
            name=Path(location.rstrip("/")).name,
            storage_options=options,
            overwrite=True,  # what is there was refused above unless --overwrite
        )
        start_records(location, len(plan), identity, attributes, options)
    fabric.barrier()
    writer = OmeZarrWriter(location, storage_options=options)
    record = DoneRecord(location, options)
    done = record.flags()
    mine = [n for n in plan.shard(num_replicas=world, rank=rank) if not done[n]]
    if rank == 0 and decision.action == "resume":
        logger.info(
            "%s: resuming: %d of %d blocks were finished earlier",
            location,
            int(done.sum()),
            len(plan),
        )
    source = ChunkCache(image, _cache_chunks(image, blocks), cache_bytes)
    forward = _Forward(model, [flips[i] for i in range(tta)], plane, fabric.device, precision)
    runner = _BlockRunner(
        source=source,
        spatial=spatial,
        normalizer=normalizer,
        forward=forward,
        mask=mask_view,
        where=str(image.path),
        blend=blend,
        batch_size=batch_size,
        probabilities=probabilities,
        targets=config.data.targets,
        dtype=dtype,
        writer=writer,
        record=record,
    )
    counts = np.zeros(4, np.int64)  # predicted, empty, windows, input bytes decoded
    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine), desc="predicting", unit="block", disable=not progress or rank != 0)
    if mine:
        counts[:3] = runner.run([plan.block(n) for n in mine], bar.update)
    bar.close()
    counts[3] = source.decoded_bytes
    totals = fabric.all_reduce(torch.from_numpy(counts), reduce_op="sum").cpu().numpy()
    fabric.barrier()
    if rank == 0:
        finish_output(location, options)
    fabric.barrier()
    seconds = time.perf_counter() - started
    input_bytes = math.prod(image.shape) * np.dtype(image.dtype).itemsize
    finished_before = int(done.sum())
    share = 1.0 - finished_before / len(plan)
    result = PredictResult(
        output=location,
        shape=tuple(out_shape),
        blocks=len(plan),
        predicted=int(totals[0]),
        empty=int(totals[1]),
        resumed=finished_before,
        windows=int(totals[2]),
        grid_windows=plan.window_count,
        seconds=seconds,
        read_amplification=float(totals[3]) / max(1.0, input_bytes * share),
        world_size=world,
        rank=rank,
    )
    logger.info(
        "predicted %s -> %s in %.1f s: %d blocks predicted, %d empty, %d resumed; read "
        "amplification %.2fx",
        image.path,
        location,
        seconds,
        result.predicted,
        result.empty,
        result.resumed,
        result.read_amplification,
    )
    return result


def _check_arguments(
    batch_size: int | None,
    overlap: float,
    blend: str,
    devices: int,
    num_nodes: int,
    precision: str,
    cache_bytes: int,
) -> None:
    def positive(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if batch_size is not None and not positive(batch_size):
        raise DataError(f"batch_size must be an integer >= 1, found {batch_size!r}")
    if not 0.0 <= overlap < 1.0:
        raise DataError(f"overlap must lie in [0, 1), found {overlap!r}")
    if blend not in ("gaussian", "hann", "constant"):
        raise DataError(f"blend must be 'gaussian', 'hann' or 'constant', found {blend!r}")
    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if not positive(value):
            raise DataError(f"{name} must be an integer >= 1, found {value!r}")
    if precision not in ("32", "bf16", "16"):
        raise DataError(f"precision must be '32', 'bf16' or '16', found {precision!r}")
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise DataError(f"cache_bytes must be an integer >= 0, found {cache_bytes!r}")


def _launch(accelerator: str, devices: int, num_nodes: int) -> Any:
    """Lightning Fabric over ``devices`` x ``num_nodes`` processes, launched (the extra
    processes of a multi-device run start here, as for ``Trainer`` with ``strategy="ddp"``)."""
    from lightning.fabric import Fabric

    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise DataError(
            f"accelerator must be 'auto', 'cpu', 'gpu' or 'cuda', found {accelerator!r}"
        )
    if accelerator in ("gpu", "cuda") and torch.cuda.device_count() < devices:
        raise DataError(
            f"accelerator {accelerator!r} with devices={devices}: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    distributed = devices * num_nodes > 1
    quiet_lightning()
    fabric = Fabric(
        accelerator="cuda" if accelerator == "gpu" else accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if distributed else "auto",
    )
    fabric.launch()
    if distributed and fabric.device.type == "cpu":
        # Processes of one node share its cores.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        torch.set_num_threads(max(1, cores // devices))
    return fabric


def _spatial_shape(value: Sequence[int], name: str, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Positive integers, one per spatial axis, each clipped to the axis."""
    shape = tuple(int(b) for b in value)
    if len(shape) != len(spatial) or any(
        b < 1 or b != v for b, v in zip(shape, value, strict=True)
    ):
        raise DataError(
            f"{name} must be {len(spatial)} positive integers (one per spatial axis of "
            f"{spatial}), found {tuple(value)}"
        )
    return tuple(min(b, n) for b, n in zip(shape, spatial, strict=True))


def _cache_chunks(image: ChannelFirst, blocks: tuple[int, ...]) -> tuple[int, ...]:
    """The input's storage chunks over its spatial axes; the output blocks where a chunk would
    be larger than 64 MiB (an uncompressed file stored as one chunk)."""
    chunks = image.spatial_chunks
    size = math.prod(chunks) * image.channels * np.dtype(image.dtype).itemsize
    return blocks if size > 64 << 20 else chunks


@dataclass
class _Prepared:
    """A block's input, or None for an empty block."""

    block: Block
    # (C, *input_region shape): stored dtype, or float32 if normalized (a tensor on an
    # accelerator)
    data: np.ndarray | torch.Tensor | None
    keep: np.ndarray | None  # (*region inside the input) bool, where a mask is given
    normalized: bool = True


@dataclass(kw_only=True)
class _BlockRunner:
    """The three stages of one block: prepare (read, check, normalise: CPU, on a reader
    thread, one block ahead), blend (the model's device) and store (write, then mark done:
    a writer thread), so that the device is busy while the next block is read and the last
    one written."""

    source: ChunkCache
    spatial: tuple[int, ...]
    normalizer: Any
    forward: _Forward
    mask: SpatialOnly | None
    where: str
    blend: str
    batch_size: int
    probabilities: bool
    targets: Mapping[str, Any]
    dtype: Any
    writer: OmeZarrWriter
    record: DoneRecord

    def _inside(self, block: Block) -> tuple[slice, ...]:
        return tuple(
            slice(r.start, min(r.stop, n)) for r, n in zip(block.region, self.spatial, strict=True)
        )

    def prepare(self, block: Block) -> _Prepared:
        inside = self._inside(block)
        if any(s.start >= s.stop for s in inside):
            return _Prepared(block, None, None)  # wholly inside the padding
        keep = None
        if self.mask is not None:
            keep = read_mask(self.mask, inside, self.spatial)
            if not keep.any():
                return _Prepared(block, None, None)
        box = tuple(
            slice(r.start, min(r.stop, n))
            for r, n in zip(block.input_region, self.spatial, strict=True)
        )
        raw = self.source[(..., *box)]
        if not raw.any():
            return _Prepared(block, None, None)
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            region = ", ".join(
                f"{a} {i.start}:{i.stop}" for a, i in zip("zyx"[-len(box) :], box, strict=True)
            )
            raise DataError(f"{self.where}: the region {region} holds NaN or infinite intensities")
        extent = tuple(r.stop - r.start for r in block.input_region)
        device = self.forward.device
        if raw.shape[1:] == extent and device.type == "cpu":
            # Kept in its stored dtype (half of float32 for uint16) and normalised window by
            # window: two blocks are in flight, so this halves the input's share of memory.
            return _Prepared(block, raw, keep, normalized=False)
        # Normalised once; an axis shorter than the patch is padded at its end with 0.
        data = np.zeros((raw.shape[0], *extent), np.float32)
        data[(slice(None), *(slice(0, n) for n in raw.shape[1:]))] = self.normalizer(raw)
        if device.type != "cpu":
            # On an accelerator the block goes there once, here on the reader thread while
            # the previous block is predicted, and windows are cut there: no host work and
            # no copy between forward passes.
            return _Prepared(block, torch.from_numpy(data).to(device), keep, normalized=True)
        return _Prepared(block, data, keep, normalized=True)

    def blend_block(self, prepared: _Prepared) -> np.ndarray | None:
        """The block's output ``([C,] *region inside the input)``, or None when empty."""
        block, data = prepared.block, prepared.data
        if data is None:
            return None
        offset = [r.start for r in block.input_region]
        accumulator = Accumulator(block, mode=self.blend)  # type: ignore[arg-type]
        for first in range(0, len(block.windows), self.batch_size):
            starts = block.windows[first : first + self.batch_size]
            boxes = [
                (
                    slice(None),
                    *(
                        slice(s - o, s - o + p)
                        for s, o, p in zip(start, offset, block.patch, strict=True)
                    ),
                )
                for start in starts
            ]
            if isinstance(data, torch.Tensor):
                batch = torch.stack([data[box] for box in boxes])
            else:
                # (the normaliser takes one (C, *patch) window: its statistics are per channel)
                cut = [data[box] for box in boxes]
                windows = np.stack(
                    cut if prepared.normalized else [self.normalizer(w) for w in cut]
                )
                batch = torch.from_numpy(np.ascontiguousarray(windows, np.float32))
            accumulator.add(self.forward(batch), starts)
        blended = accumulator.result()
        crop = tuple(slice(0, s.stop - s.start) for s in self._inside(block))
        blended = blended[(slice(None), *crop)]
        if self.probabilities:
            result = blended.half().cpu().numpy()
        else:
            parts, first_channel = [], 0
            for spec in self.targets.values():
                count = len(spec.classes)
                indices = blended[first_channel : first_channel + count].argmax(dim=0)
                parts.append(np.asarray(spec.classes, self.dtype)[indices.cpu().numpy()])
                first_channel += count
            result = np.stack(parts) if len(parts) > 1 else parts[0]
        if prepared.keep is not None:
            result = np.where(prepared.keep, result, np.zeros((), result.dtype))
        return np.ascontiguousarray(result)

    def run(self, blocks: Sequence[Block], done: Any) -> np.ndarray:
        """Predict ``blocks`` (not empty) in order; ``done(1)`` after each is stored.

        Returns:
            ``(3,)`` int64: blocks predicted, blocks empty, windows predicted.
        """
        counts = np.zeros(3, np.int64)
        with (
            ThreadPoolExecutor(1, thread_name_prefix="voxflow-predict-read") as reader,
            ThreadPoolExecutor(1, thread_name_prefix="voxflow-predict-write") as writer,
        ):
            ahead: Future[_Prepared] = reader.submit(self.prepare, blocks[0])
            stored: Future[None] | None = None
            for position in range(len(blocks)):
                prepared = ahead.result()
                if position + 1 < len(blocks):
                    ahead = reader.submit(self.prepare, blocks[position + 1])
                data = self.blend_block(prepared)
                if data is None:
                    counts[1] += 1
                else:
                    counts[0] += 1
                    counts[2] += len(prepared.block.windows)
                if stored is not None:
                    stored.result()
                    done(1)
                stored = writer.submit(self.store, prepared.block, data)
            if stored is not None:
                stored.result()
                done(1)
        return counts

    def store(self, block: Block, data: np.ndarray | None) -> None:
        if data is not None:
            start = [r.start for r in block.region]
            self.writer.write_region([0, *start] if data.ndim > len(start) else start, data)
        self.record.mark(block.number)


def _attributes(
    config: RunConfig,
    model: LoadedModel,
    image: ChannelFirst,
    normalizer: Any,
    probabilities: bool,
    tta: int,
    blend: str,
) -> dict[str, Any]:
    targets = config.data.targets
    first = 0
    ranges = {}
    for name, spec in targets.items():
        ranges[name] = [first, first + len(spec.classes)]
        first += len(spec.classes)
    return {
        "kind": "probabilities" if probabilities else "labels",
        "targets": {
            name: {
                "classes": spec.classes,
                "class_names": spec.names(),
                "channels": ranges[name]
                if probabilities
                else [list(targets).index(name), list(targets).index(name) + 1],
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


def default_blocks(
    spatial: Sequence[int], patch: Sequence[int], chunks: Sequence[int]
) -> tuple[int, ...]:
    """GPU block shape: per axis the smallest multiple of the chunk that holds four patches
    (a window across a block border is predicted in each block it overlaps: with stride p/2,
    blocks of 2p predict 1.25^3 = 1.95x the windows of the grid in 3D, blocks of 4p 1.42x)."""
    return tuple(
        min(n, c * -(-4 * p // c)) if p > 1 else c
        for n, p, c in zip(spatial, patch, chunks, strict=True)
    )


class _Forward:
    """Model forward with flip TTA: ``(B, C, *patch)`` float32 on the device -> class
    probabilities ``(B, sum of classes, *patch)`` float32 on the model's device (softmax per
    target, averaged over the flips after undoing them by replaying the same flips)."""

    def __init__(
        self,
        model: LoadedModel,
        flips: Sequence[tuple[int, ...]],
        plane: bool,
        device: torch.device,
        precision: str,
    ) -> None:
        self.model = model
        self.flips = list(flips)
        self.plane = plane
        self.device = device
        self.targets = list(model.config.data.targets)
        self.flip = RandFlip(("image",), 1.0)
        self.autocast = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)

    def _params(self, batch: int, dims: int) -> dict[str, torch.Tensor]:
        flip = torch.zeros(batch * len(self.flips), dims, dtype=torch.bool)
        for i, axes in enumerate(self.flips):
            for axis in axes:
                flip[i * batch : (i + 1) * batch, axis] = True
        return {"apply": flip.any(dim=1), "flip": flip}

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        image = batch
        if self.plane:
            image = image[:, :, 0]
        count, dims = image.shape[0], image.ndim - 2
        params = self._params(count, dims)
        repeated = image.repeat(len(self.flips), *[1] * (image.ndim - 1))
        flipped = self.flip.replay({"image": repeated}, params)["image"]
        with torch.autocast(
            self.device.type,
            dtype=self.autocast or torch.float32,
            enabled=self.autocast is not None,
        ):
            outputs = self.model.network(flipped)
        probabilities = torch.cat(
            [torch.softmax(outputs[t].float(), dim=1) for t in self.targets], dim=1
        )
        restored = self.flip.replay({"image": probabilities}, params)["image"]
        mean = restored.reshape(len(self.flips), count, *restored.shape[1:]).mean(dim=0)
        if self.plane:
            mean = mean.unsqueeze(2)
        return mean
