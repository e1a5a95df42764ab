"""Two gloo processes: each rank's sampler, inside a DataLoader, gets its own share of an epoch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, pandas as pd, torch.distributed as dist
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader
    from voxflow_contrast.sampler import BatchSampler

    rank, out = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", rank=rank, world_size=2)
    rng = np.random.default_rng(0)  # the same table on both ranks
    rows = 3000
    table = pd.DataFrame({
        "experiment": pd.Categorical(rng.choice(["exp1", "exp2", "exp3"], rows, p=[0.5, 0.3, 0.2])),
        "condition": pd.Categorical(rng.choice(["infected", "mock"], rows)),
        "t": rng.integers(0, 30, rows).astype("int32"),
        "anchor": rng.random(rows) < 0.9,
    })
    results = {}
    for replacement in (False, True):
        sampler = BatchSampler(
            table, batch_size=24, group_by="experiment", leaky=0.25, stratify_by="condition",
            temporal_window=(10, 19), temporal_fraction=0.5, replacement=replacement,
            batches_per_epoch=41 if replacement else None, seed=7,
            num_replicas=dist.get_world_size(), rank=dist.get_rank(),
        )
        loader = DataLoader(range(rows), batch_sampler=sampler, num_workers=0)
        epochs = []
        for epoch in range(2):
            _set_sampler_epoch(loader, epoch)  # as Lightning's fit loop does each epoch
            mine = [batch.tolist() for batch in loader]
            gathered = [None, None]
            dist.all_gather_object(gathered, mine)
            counts = [len(b) for b in gathered]
            assert counts[0] == counts[1] == len(sampler), (counts, len(sampler))
            assert {len(batch) for share in gathered for batch in share} == {24}
            if not replacement:
                first = {i for batch in gathered[0] for i in batch}
                second = {i for batch in gathered[1] for i in batch}
                assert not first & second, sorted(first & second)[:10]
            epochs.append(gathered)
        assert epochs[0] != epochs[1]
        results[str(replacement)] = {"length": len(sampler), "epochs": epochs}
    with open(out, "w") as handle:
        json.dump(results, handle)
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.mark.ddp
def test_two_gloo_ranks_get_equal_disjoint_shares(tmp_path: Path) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    outputs = [tmp_path / f"rank{r}.json" for r in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(r), str(outputs[r])],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
    results = [json.loads(o.read_text()) for o in outputs]
    assert results[0] == results[1]  # both ranks gathered the same shares
    for replacement, result in results[0].items():
        assert result["length"] >= 1
        for shares in result["epochs"]:
            assert len(shares[0]) == len(shares[1]) == result["length"]
            drawn = [i for share in shares for batch in share for i in batch]
            if replacement == "False":
                assert len(drawn) == len(set(drawn))  # no anchor on two ranks, nor twice
    assert results[0]["True"]["length"] == 20  # 41 global batches, drop_last: 40 over 2 ranks
