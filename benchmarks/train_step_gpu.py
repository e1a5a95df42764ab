"""Training-step throughput and mixed precision of voxflow-models + voxflow-utils on a GPU.

Segmentation: multi-head DynUNet (3D, filters 32..256, deep supervision) on 128^3 patches,
batch 2, DiceCE per head with deep-supervision weights, AdamW. Contrastive: 2D ResNet-18
encoder, batch 256 of 2x128x128 pairs, NT-Xent with hard-negative concentration. Each in
fp32, bf16 autocast and fp16 autocast with a gradient scaler; the table gives steps/s, peak
GPU memory and the loss after the timed steps (must be finite).

    uv run --group bench python benchmarks/train_step_gpu.py   # needs CUDA
"""

from __future__ import annotations

import contextlib
import time

import torch
from monai.losses import DiceCELoss

from voxflow_models import build_model
from voxflow_utils import DeepSupervisionLoss, NTXentHCLLoss

WARMUP, STEPS = 3, 10


def segmentation_step(precision: str) -> tuple[float, float, float]:
    model = build_model(
        "multihead",
        backbone="dynunet",
        heads={"ink": 2, "surface": 2},
        spatial_dims=3,
        in_channels=1,
        kernel_size=[3] * 5,
        strides=[1, 2, 2, 2, 2],
        upsample_kernel_size=[2] * 4,
        filters=[32, 64, 128, 256, 320],
        deep_supervision=True,
        deep_supr_num=2,
    ).cuda()
    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True), 3).cuda()
    image = torch.randn(2, 1, 128, 128, 128, device="cuda")
    target = torch.randint(0, 2, (2, 1, 128, 128, 128), device="cuda")
    return run(model, lambda out: sum(loss(out[h], target) for h in out), image, precision)


def contrastive_step(precision: str) -> tuple[float, float, float]:
    model = build_model("contrastive_resnet", spatial_dims=2, in_channels=2, depth=18).cuda()
    loss = NTXentHCLLoss(temperature=0.1, beta=1.0)
    views = torch.randn(512, 2, 128, 128, device="cuda")

    def objective(output: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        projections = output[1]
        return loss(projections[:256], projections[256:])

    return run(model, objective, views, precision)


def run(
    model: torch.nn.Module, objective, batch: torch.Tensor, precision: str
) -> tuple[float, float, float]:
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    torch.cuda.reset_peak_memory_stats()
    value = torch.zeros(())
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            torch.cuda.synchronize()
            begin = time.perf_counter()
        autocast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            value = objective(model(batch))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(optimiser)
        scaler.update()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - begin
    assert torch.isfinite(value), f"{precision}: loss is {value}"
    return STEPS / seconds, torch.cuda.max_memory_allocated() / 2**30, float(value.detach())


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs CUDA")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| workload | precision | steps/s | peak GiB | loss |")
    print("|---|---|---|---|---|")
    for name, step in (
        ("seg DynUNet 128^3 x2", segmentation_step),
        ("contrastive ResNet-18 2x256", contrastive_step),
    ):
        for precision in ("fp32", "bf16", "fp16"):
            rate, peak, value = step(precision)
            print(f"| {name} | {precision} | {rate:.2f} | {peak:.1f} | {value:.3f} |")
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
