"""Two gloo processes: the gathered tensor is the concatenation; gradients match one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from voxflow_utils import NTXentLoss, gather_with_gradient

WORKER = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from voxflow_utils import NTXentLoss, gather_with_gradient
    rank, out = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    first_all, second_all = torch.randn(8, 5), torch.randn(8, 5)
    first = first_all[rank * 4 : (rank + 1) * 4].clone().requires_grad_()
    second = second_all[rank * 4 : (rank + 1) * 4].clone().requires_grad_()
    gathered_first, gathered_second = gather_with_gradient(first), gather_with_gradient(second)
    # Each rank's loss covers the whole gathered batch; the total is the sum over ranks.
    loss = NTXentLoss(0.3)(gathered_first, gathered_second)
    loss.backward()
    torch.save({"gathered": gathered_first.detach(), "grad_first": first.grad, "grad_second": second.grad}, out)
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


@pytest.mark.ddp
def test_gather_with_gradient_on_two_gloo_processes(tmp_path: Path) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    outputs = [tmp_path / f"rank{r}.pt" for r in range(2)]
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
    results = [torch.load(o) for o in outputs]
    torch.manual_seed(0)
    first_all, second_all = torch.randn(8, 5), torch.randn(8, 5)
    for result in results:
        torch.testing.assert_close(result["gathered"], first_all)
    # One process holding the whole batch, with the loss summed over the two ranks' copies.
    first_all.requires_grad_()
    second_all.requires_grad_()
    (2 * NTXentLoss(0.3)(first_all, second_all)).backward()
    for rank, result in enumerate(results):
        rows = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(result["grad_first"], first_all.grad[rows])
        torch.testing.assert_close(result["grad_second"], second_all.grad[rows])


def test_single_process_gather_is_the_identity() -> None:
    tensor = torch.randn(3, 2)
    assert gather_with_gradient(tensor) is tensor
