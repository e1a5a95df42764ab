"""``embed``: features and projections of every cell observation of the index, as AnnData.

The file (``.h5ad``) opens directly in scanpy:

- ``X``: backbone features ``(N, F)`` float32;
- ``obsm["X_projection"]``: projections ``(N, P)`` float32;
- ``obs``: every column of the cell index (experiment, well, fov, condition, track_id, t,
  z, y, x, lineage, normalisation statistics, anchor), one row per observation, in index order;
  ``obs_names`` are the index's row positions;
- ``uns["voxflow_contrast"]``: the checkpoint, its encoder fingerprint, the channels, the
  crop, the index file and the experiments file.

Embedding is deterministic: evaluation mode (no augmentation, no channel dropout, batch
normalisation's running statistics) and a fixed order of rows, so the same checkpoint and data
give the same numbers.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from voxflow_utils import loader_start_method

from .config import RunConfig
from .errors import ModelError
from .module import CHECKPOINT_KEY, ContrastModule

logger = logging.getLogger(__name__)


@dataclass
class EmbedResult:
    """What ``embed`` wrote."""

    path: Path
    observations: int
    features: int
    projections: int
    seconds: float

    def format(self) -> str:
        return (
            f"voxflow-contrast embed: {self.observations} observations -> features "
            f"({self.observations}, {self.features}) and projections ({self.observations}, "
            f"{self.projections}) in {self.seconds:.0f} s\n  embeddings  {self.path}"
        )


def load_module(checkpoint: str | os.PathLike[str]) -> ContrastModule:
    """The module stored in a voxflow-contrast checkpoint, checked, in evaluation mode on CPU.

    Raises:
        FileNotFoundError: no such file.
        ModelError: not a voxflow-contrast checkpoint, or its weights do not fit the encoder
            its configuration describes (a checkpoint from a different encoder config), each
            named with the differing tensors.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        # weights_only: a checkpoint is data (tensors, numbers, strings), never code to run.
        stored = torch.load(path, map_location="cpu", weights_only=True)
    # What torch's restricted unpickler raises on a file that is no checkpoint (text, a
    # truncated file, another pickle) depends on the bytes it meets first.
    except (
        OSError,
        RuntimeError,
        EOFError,
        ValueError,
        IndexError,
        KeyError,
        pickle.UnpicklingError,
    ) as exc:
        raise ModelError(
            f"checkpoint {path}: cannot be read as a PyTorch checkpoint: {exc}"
        ) from exc
    if not isinstance(stored, dict) or CHECKPOINT_KEY not in stored:
        raise ModelError(
            f"checkpoint {path}: not a voxflow-contrast checkpoint (no '{CHECKPOINT_KEY}' "
            f"entry; keys {sorted(stored)[:8] if isinstance(stored, dict) else type(stored)})"
        )
    hyper = stored.get("hyper_parameters", {})
    missing = [k for k in ("config", "channels", "crop") if k not in hyper]
    if missing:
        raise ModelError(f"checkpoint {path}: hyper_parameters lack {missing}")
    config = RunConfig.model_validate(dict(hyper["config"]))
    described = stored[CHECKPOINT_KEY]
    if described.get("encoder_fingerprint") != config.encoder_fingerprint():
        raise ModelError(
            f"checkpoint {path}: its encoder fingerprint {described.get('encoder_fingerprint')} "
            f"does not match the encoder its configuration describes "
            f"({config.encoder_fingerprint()}: {config.encoder.model_dump()}); the checkpoint "
            f"was written by a different encoder config"
        )
    module = ContrastModule(hyper["config"], hyper["channels"], hyper["crop"])
    own = module.state_dict()
    weights = stored.get("state_dict", {})
    unexpected = sorted(set(weights) - set(own))
    absent = sorted(set(own) - set(weights))
    reshaped = [
        f"{k} {tuple(weights[k].shape)} (encoder: {tuple(v.shape)})"
        for k, v in own.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if unexpected or absent or reshaped:
        raise ModelError(
            f"checkpoint {path}: its weights do not fit the encoder of its configuration "
            f"({config.encoder.model_dump()}): "
            + "; ".join(
                part
                for part in (
                    f"unexpected {unexpected[:4]}" if unexpected else "",
                    f"missing {absent[:4]}" if absent else "",
                    f"other shapes {reshaped[:4]}" if reshaped else "",
                )
                if part
            )
        )
    module.load_state_dict(weights)
    module.eval()
    return module


class _Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Consecutive chunks of the index's rows, each read as one batch of crops."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        self.dataset = dataset
        self.starts = list(range(0, dataset.n_rows, batch_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[number]
        rows = np.arange(start, min(start + self.batch_size, self.dataset.n_rows))
        return torch.from_numpy(rows), self.dataset.crops(rows)


def embed(
    checkpoint: str | os.PathLike[str],
    experiments: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overrides: tuple[str, ...] = (),
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "cpu",
    progress: bool = True,
    module: ContrastModule | None = None,
) -> EmbedResult:
    """Embed every observation of the cell index of ``experiments`` with ``checkpoint``.

    Args:
        checkpoint: A voxflow-contrast checkpoint (``last.ckpt`` of a run).
        experiments: The experiments file (its index is built or reused).
        output: The ``.h5ad`` file to write (atomically).
        overrides: Dotted overrides of the experiments file.
        batch_size: Crops per forward pass.
        num_workers: DataLoader processes.
        device: Torch device of the encoder.
        progress: Show a progress bar.
        module: Embed with this module instead of loading ``checkpoint`` (for an untrained
            baseline); ``checkpoint`` then only names it in the provenance.

    Raises:
        ModelError: a bad checkpoint, or data the encoder does not read (other channels,
            a crop that does not fit, a Z window deeper than the fields).
        ExperimentError: a plate no longer has a channel the experiments file maps (an
            index whose plates or tables changed otherwise is rebuilt, and the log says what
            changed).
    """
    import time

    import anndata

    from .data import PairDataset, check_index_current
    from .experiments import load_experiments, register_experiments
    from .index import build_index

    started = time.perf_counter()
    output = Path(output)
    if output.suffix != ".h5ad":
        raise ModelError(f"output {output}: expected a .h5ad file name")
    if module is None:
        module = load_module(checkpoint)
    config = load_experiments(experiments, overrides)
    index = build_index(config, progress=progress)
    if list(index.channels) != module.channels:
        raise ModelError(
            f"checkpoint {checkpoint}: the encoder reads channels {module.channels}, the "
            f"experiments file {experiments} has common channels {list(index.channels)}"
        )
    registered = register_experiments(config)
    check_index_current(config, registered, index)
    dataset = PairDataset(
        index, registered, z_window=module.run_config.data.z_window, crop=module.crop
    )
    loader = DataLoader(
        _Rows(dataset, batch_size),
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context=loader_start_method() if num_workers else None,
    )
    module = module.to(device).eval()
    features = np.empty((dataset.n_rows, 0), np.float32)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.no_grad():
        batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
        for _, crops in tqdm(
            batches, total=len(loader), desc="embed", unit="batch", disable=not progress
        ):
            feature, projection = module(crops.to(device))
            parts.append((feature.float().cpu().numpy(), projection.float().cpu().numpy()))
    features = np.concatenate([p[0] for p in parts])
    projections = np.concatenate([p[1] for p in parts])
    obs = index.table.reset_index(drop=True).copy()
    obs.index = obs.index.astype(str)
    adata = anndata.AnnData(X=features, obs=obs, obsm={"X_projection": projections})
    adata.uns[CHECKPOINT_KEY] = {
        "checkpoint": str(checkpoint),
        "encoder_fingerprint": module.run_config.encoder_fingerprint(),
        "encoder": module.run_config.encoder.model_dump(mode="json"),
        "channels": list(module.channels),
        "crop": list(module.crop),
        "z_window": module.run_config.data.z_window,
        "index": str(index.path),
        "experiments": str(Path(experiments).resolve()),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        adata.write_h5ad(temporary)
        temporary.replace(output)
    finally:
        temporary.unlink(missing_ok=True)
    return EmbedResult(
        output,
        len(features),
        features.shape[1],
        projections.shape[1],
        time.perf_counter() - started,
    )
