"""DDP with two gloo processes on the CPU.

1. The gathered-negative loss: each rank holds half of a batch; with ``gather_negatives`` the
   loss each rank computes equals the single-process loss on the concatenated batch, and the
   gradients averaged across ranks (what DDP does) equal the single-process gradients.
2. A real ``voxflow-contrast train`` run with ``trainer.strategy=ddp trainer.devices=2``:
   the ranks read disjoint anchors and end with identical weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from voxflow_contrast.config import RunConfig
from voxflow_contrast.module import ContrastModule

LOSS_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from voxflow_contrast.config import RunConfig
    from voxflow_contrast.module import ContrastModule

    rank, config_path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", rank=rank, world_size=2)
    config = json.load(open(config_path))
    torch.manual_seed(0)
    module = ContrastModule(config, ["phase", "reporter"], (16, 16)).eval()
    data = torch.load(sys.argv[4])
    half = data["anchor"].shape[0] // 2
    part = slice(rank * half, (rank + 1) * half)
    _, anchors, positives = module._projections(
        {"anchor": data["anchor"][part], "positive": data["positive"][part]}
    )
    loss = module.contrastive_loss(anchors, positives)
    loss.backward()
    grads = []
    for parameter in module.parameters():
        grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # DDP averages gradients across ranks
        grads.append(grad / 2)
    torch.save({"loss": loss.detach(), "grads": grads}, out)
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return int(handle.getsockname()[1])


def _run_ranks(arguments: list[list[str]], timeout: float = 180) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", LOSS_WORKER, *args], env=env, stderr=subprocess.PIPE, text=True
        )
        for args in arguments
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=timeout)
        assert worker.returncode == 0, stderr


def _small_config(tmp_path: Path, **loss: Any) -> dict[str, Any]:
    return RunConfig.model_validate(
        {
            "experiments": str(tmp_path / "experiments.yaml"),
            "run_dir": str(tmp_path / "run"),
            "encoder": {"depth": 10, "widen_factor": 0.25, "projection_dim": 16, "hidden_dim": 32},
            "loss": {"temperature": 0.2, "beta": 0.5, **loss},
            "trainer": {"max_steps": 1},
        }
    ).model_dump(mode="json")


@pytest.mark.ddp
def test_gathered_negative_loss_equals_single_process_loss_on_the_concatenated_batch(
    tmp_path: Path,
) -> None:
    config = _small_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(3)
    data = {
        "anchor": torch.randn(8, 2, 1, 16, 16, generator=generator),
        "positive": torch.randn(8, 2, 1, 16, 16, generator=generator),
    }
    torch.save(data, tmp_path / "batch.pt")
    outputs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    _run_ranks(
        [
            [str(r), str(tmp_path / "config.json"), str(outputs[r]), str(tmp_path / "batch.pt")]
            for r in range(2)
        ]
    )
    torch.manual_seed(0)
    single = ContrastModule(config, ["phase", "reporter"], (16, 16)).eval()
    _, anchors, positives = single._projections(data)
    loss = single.contrastive_loss(anchors, positives)  # one process: nothing to gather
    loss.backward()
    ranks = [torch.load(path) for path in outputs]
    for result in ranks:
        torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    for parameter, *gathered in zip(
        single.parameters(), ranks[0]["grads"], ranks[1]["grads"], strict=True
    ):
        expected = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        for grad in gathered:
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def _records(run_dir: Path, rank: int) -> dict[int, list[int]]:
    path = run_dir / "debug" / f"batches-rank{rank}.jsonl"
    return {
        line["step"]: line["anchor_row"] for line in map(json.loads, path.read_text().splitlines())
    }


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_read_disjoint_anchors_and_end_with_identical_weights(
    synthetic_experiments: Path, tmp_path: Path
) -> None:
    run = {
        "experiments": str(synthetic_experiments),
        "experiment_overrides": [f"index.cache_dir={tmp_path / 'cache'}"],
        "run_dir": str(tmp_path / "run"),
        "sampler": {"batch_size": 8, "group_by": "experiment", "stratify_by": "condition"},
        "data": {"val_split": "fov", "val_fraction": 0.25, "num_workers": 0},
        "encoder": {"depth": 10, "widen_factor": 0.25, "projection_dim": 16, "hidden_dim": 32},
        "trainer": {
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "max_steps": 3,
            "limit_val_batches": 1,
        },
        "logging": {"record_batches": True, "loggers": ["csv"], "scatter": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxflow_contrast.cli",
            "train",
            "--config",
            str(path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    ranks = [_records(tmp_path / "run", rank) for rank in (0, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1]) == [0, 1, 2]
    for step in range(3):
        first, second = set(ranks[0][step]), set(ranks[1][step])
        assert len(first) == len(second) == 8
        assert not first & second, f"step {step}: both ranks trained on anchors {first & second}"
    digests = [
        (tmp_path / "run" / "debug" / f"weights-rank{rank}.sha256").read_text() for rank in (0, 1)
    ]
    assert digests[0] == digests[1]
