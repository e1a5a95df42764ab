"""``check-config``: everything ``train`` checks before its first step, without training."""

from __future__ import annotations

import logging

import torch

from .config import RunConfig
from .data import CHUNK, PatchDataset, PatchRef, build_data
from .errors import DataError
from .module import build_network

logger = logging.getLogger(__name__)


def check_config(config: RunConfig, *, progress: bool = False) -> str:
    """Open and check every volume, scan the labels, build the patch index, read one window of
    each training volume and run the network on it.

    Returns:
        A readable report.

    Raises:
        ConfigError, DataError, ...: the first problem found, with the file or key named.
    """
    data = build_data(config, progress=progress)
    network = build_network(config, data.in_channels).eval()
    dataset = PatchDataset(data)
    axis = next(iter(data.indexes))
    index = data.indexes[axis]
    checked = []
    for volume_id in sorted(set(index.volume_ids.tolist())):
        row = int((index.volume_ids == volume_id).argmax())
        name = index.volumes[volume_id]
        position = [v.id for v in data.volumes].index(name)
        sample = dataset[PatchRef(position, axis, tuple(int(s) for s in index.positions[row]))]
        with torch.no_grad():
            outputs = network(sample["image"][None])
        for head, channels in config.heads().items():
            found = tuple(outputs[head].shape)
            expected = (1, channels, *sample["image"].shape[1:])
            if found != expected:
                raise DataError(
                    f"model {config.model.name}: head {head!r} returned shape {found} for a "
                    f"patch of {tuple(sample['image'].shape)}, expected {expected}; check "
                    f"patch.size against model.kwargs.strides"
                )
        checked.append(name)
    parameters = sum(p.numel() for p in network.parameters())
    mode = "chunk" if axis == CHUNK else f"plane (axes {config.patch.plane_axes})"
    lines = [
        "voxflow-segment check-config: OK",
        f"  volumes         {len(data.volumes)} opened and checked ({data.in_channels} channel(s))",
        f"  label values    within the declared classes of {sorted(config.data.targets)}",
        f"  patches         {mode} {config.patch.size}: {data.training_windows()} training, "
        f"{len(data.validation)} validation windows",
        f"  normalisation   {data.normalizers[0].describe()}",
        f"  network         {config.model.name}, {parameters:,} parameters; forward OK on a "
        f"patch of {', '.join(checked)}",
        f"  schedule        {config.optim.schedule} over {config.total_steps()} steps",
        f"  run_dir         {config.run_dir}",
    ]
    return "\n".join(lines)
