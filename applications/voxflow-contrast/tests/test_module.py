"""The LightningModule on its own (no data, no Trainer run): the learning-rate schedule, the
contrastive loss, the augmentation's seeding and modes, the encoder layouts and bad input.

References: the schedule's closed formula written out by hand; NT-Xent with hard-negative
concentration computed by brute force in numpy from the formula in the docstring of
``voxflow_utils.NTXentHCLLoss``; encoders built directly with ``voxflow_models.build_model``
and fed the slices by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from voxflow_contrast.config import RunConfig, load_run_config
from voxflow_contrast.errors import ModelError
from voxflow_contrast.module import ContrastModule, cosine_schedule
from voxflow_models import build_model
from voxflow_utils import ConfigError

ENCODER: dict[str, Any] = {
    "depth": 10,
    "widen_factor": 0.25,
    "projection_dim": 16,
    "hidden_dim": 32,
}
CHANNELS = ["phase", "reporter"]
NO_AUGMENTATION: dict[str, Any] = {
    name: None
    for name in ("flip", "rot90", "affine", "noise", "blur", "brightness", "contrast", "gamma")
}


def make_module(tmp_path: Path, **sections: Any) -> ContrastModule:
    """A small module over channels ``phase, reporter`` and 16x16 crops; ``sections`` replace
    or extend the run configuration's sections."""
    data: dict[str, Any] = {
        "experiments": str(tmp_path / "experiments.yaml"),
        "run_dir": str(tmp_path / "run"),
        "encoder": ENCODER,
        "trainer": {"max_steps": 10},
    }
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    config = RunConfig.model_validate(data)
    return ContrastModule(config.model_dump(mode="json"), CHANNELS, (16, 16))


def attach(module: ContrastModule, *, training: bool, step: int = 0, rank: int = 0) -> None:
    """Attach a stand-in trainer whose state ``on_after_batch_transfer`` reads."""
    module.trainer = SimpleNamespace(  # type: ignore[assignment]
        training=training, global_step=step, global_rank=rank
    )


def pair_batch(size: int = 6, depth: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch as ``PairDataset`` returns it, anchor and positive identical."""
    generator = torch.Generator().manual_seed(seed)
    crops = torch.randn(size, 2, depth, 16, 16, generator=generator) + 2.0
    return {
        "anchor": crops,
        "positive": crops.clone(),
        "anchor_row": torch.arange(size),
        "positive_row": torch.arange(size) + 100,
        "tau": torch.ones(size, dtype=torch.int64),
    }


# --------------------------------------------------------------------------- schedule
def test_cosine_schedule_against_the_closed_formula() -> None:
    # warm-up 4, total 12: (step + 1) / 4 during the warm-up, then 0.5 (1 + cos(pi p)) with
    # p = (step - 4) / 8, clamped to 1 after the end.
    expected = {
        0: 0.25,
        1: 0.5,
        2: 0.75,
        3: 1.0,
        4: 1.0,
        6: 0.5 * (1 + math.sqrt(2) / 2),  # p = 1/4
        8: 0.5,  # p = 1/2
        10: 0.5 * (1 - math.sqrt(2) / 2),  # p = 3/4
        12: 0.0,
        40: 0.0,
    }
    for step, value in expected.items():
        assert cosine_schedule(step, 4, 12, "cosine") == pytest.approx(value, abs=1e-12), step
    for step, value in {0: 0.25, 3: 1.0, 4: 1.0, 8: 1.0, 12: 1.0, 1000: 1.0}.items():
        assert cosine_schedule(step, 4, 12, "constant") == pytest.approx(value), step
    # no warm-up: the cosine starts at 1 at step 0
    assert cosine_schedule(0, 0, 10, "cosine") == pytest.approx(1.0)
    assert cosine_schedule(5, 0, 10, "cosine") == pytest.approx(0.5)


def test_the_optimiser_follows_the_schedule_over_trainer_max_steps_or_optim_total_steps(
    tmp_path: Path,
) -> None:
    for optim, total in (
        ({"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 2}, 10),
        ({"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 2, "total_steps": 6}, 6),
    ):
        module = make_module(tmp_path, optim=optim)
        configured = module.configure_optimizers()
        optimizer = configured["optimizer"]
        scheduler = configured["lr_scheduler"]["scheduler"]
        assert configured["lr_scheduler"]["interval"] == "step"
        assert isinstance(optimizer, torch.optim.AdamW)
        assert optimizer.param_groups[0]["weight_decay"] == 0.1
        learning_rates = []
        for _ in range(total + 2):
            learning_rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        by_hand = [
            0.01
            * (
                (s + 1) / 2
                if s < 2
                else 0.5 * (1 + math.cos(math.pi * min(1, (s - 2) / (total - 2))))
            )
            for s in range(total + 2)
        ]
        np.testing.assert_allclose(learning_rates, by_hand, rtol=1e-9, atol=1e-15)


# --------------------------------------------------------------------------- loss
def ntxent_hcl_by_hand(
    first: np.ndarray, second: np.ndarray, temperature: float, beta: float
) -> float:
    """Brute-force NT-Xent with hard-negative concentration, one anchor at a time.

    Shapes:
        first, second: ``(B, D)`` float64; row ``k`` of both are views of one sample.
    """
    views = np.concatenate([first, second]).astype(np.float64)
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    n = len(views)
    batch = n // 2
    losses = []
    for i in range(n):
        p = (i + batch) % n
        similarity = [float(views[i] @ views[j]) for j in range(n)]
        negatives = [j for j in range(n) if j not in (i, p)]
        raw = [math.exp(beta * similarity[j]) for j in negatives]
        weights = [w / (sum(raw) / len(raw)) for w in raw]
        positive = math.exp(similarity[p] / temperature)
        denominator = positive + sum(
            w * math.exp(similarity[j] / temperature)
            for w, j in zip(weights, negatives, strict=True)
        )
        losses.append(-math.log(positive / denominator))
    return sum(losses) / n


@pytest.mark.parametrize(("temperature", "beta"), [(0.2, 0.0), (0.2, 0.5), (0.07, 2.0)])
def test_contrastive_loss_in_one_process_equals_ntxent_hcl_by_hand(
    tmp_path: Path, temperature: float, beta: float
) -> None:
    module = make_module(tmp_path, loss={"temperature": temperature, "beta": beta})
    generator = torch.Generator().manual_seed(7)
    anchors = torch.randn(5, 16, generator=generator, dtype=torch.float64)
    positives = anchors + 0.5 * torch.randn(5, 16, generator=generator, dtype=torch.float64)
    loss = module.contrastive_loss(anchors, positives)
    expected = ntxent_hcl_by_hand(anchors.numpy(), positives.numpy(), temperature, beta)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_hard_negative_concentration_changes_the_loss(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    anchors = torch.randn(6, 16, generator=generator)
    positives = torch.randn(6, 16, generator=generator)
    plain = make_module(tmp_path, loss={"beta": 0.0}).contrastive_loss(anchors, positives)
    hard = make_module(tmp_path, loss={"beta": 1.0}).contrastive_loss(anchors, positives)
    assert float(plain) != pytest.approx(float(hard), rel=1e-4)


# --------------------------------------------------------------------------- augmentation
def test_training_batches_get_different_draws_for_anchor_and_positive(tmp_path: Path) -> None:
    module = make_module(tmp_path)
    attach(module, training=True, step=3)
    batch = pair_batch()
    out = module.on_after_batch_transfer(batch, 0)
    assert out["anchor"].shape == out["positive"].shape == batch["anchor"].shape
    assert out["anchor"].dtype == torch.float32
    assert not torch.equal(out["anchor"], batch["anchor"])
    assert not torch.equal(out["anchor"], out["positive"])  # identical inputs, two draws
    for key in ("anchor_row", "positive_row", "tau"):
        assert torch.equal(out[key], batch[key])


def test_the_same_seed_step_and_rank_give_the_same_draws_as_after_a_resume(
    tmp_path: Path,
) -> None:
    first = make_module(tmp_path)
    attach(first, training=True, step=5)
    batch = pair_batch()
    reference = first.on_after_batch_transfer(batch, 0)
    first.on_after_batch_transfer(pair_batch(seed=9), 0)  # advances the generator
    again = first.on_after_batch_transfer(batch, 0)
    resumed = make_module(tmp_path)  # a new process resuming at step 5
    attach(resumed, training=True, step=5)
    replayed = resumed.on_after_batch_transfer(batch, 0)
    for out in (again, replayed):
        assert torch.equal(out["anchor"], reference["anchor"])
        assert torch.equal(out["positive"], reference["positive"])
    for step, rank in ((6, 0), (5, 1)):
        attach(resumed, training=True, step=step, rank=rank)
        other = resumed.on_after_batch_transfer(batch, 0)
        assert not torch.equal(other["anchor"], reference["anchor"]), (step, rank)
    other_seed = make_module(tmp_path, seed=1)
    attach(other_seed, training=True, step=5)
    assert not torch.equal(
        other_seed.on_after_batch_transfer(batch, 0)["anchor"], reference["anchor"]
    )


def test_validation_and_evaluation_batches_are_returned_unchanged(tmp_path: Path) -> None:
    module = make_module(tmp_path, augment={"channel_dropout": {"prob": 1.0}})
    batch = pair_batch()
    attach(module, training=False)
    assert module.on_after_batch_transfer(batch, 0) is batch
    module.eval()  # eval mode: every transform is the identity even if called
    attach(module, training=True)
    out = module.on_after_batch_transfer(batch, 0)
    assert torch.equal(out["anchor"], batch["anchor"])
    assert torch.equal(out["positive"], batch["positive"])


def test_channel_dropout_zeroes_whole_listed_channels_in_training_only(tmp_path: Path) -> None:
    module = make_module(
        tmp_path,
        augment={**NO_AUGMENTATION, "channel_dropout": {"prob": 1.0, "channels": ["reporter"]}},
    )
    assert module.augment is None
    batch = pair_batch(depth=3)
    attach(module, training=True, step=2)
    out = module.on_after_batch_transfer(batch, 0)
    for view in ("anchor", "positive"):
        assert (out[view][:, 1] == 0).all()  # every pixel of every slice of 'reporter'
        assert torch.equal(out[view][:, 0], batch[view][:, 0])  # 'phase' never touched
    attach(module, training=False)
    assert torch.equal(module.on_after_batch_transfer(batch, 0)["anchor"], batch["anchor"])

    every = make_module(tmp_path, augment={**NO_AUGMENTATION, "channel_dropout": {"prob": 1.0}})
    attach(every, training=True)
    out = every.on_after_batch_transfer(batch, 0)
    assert (out["anchor"] == 0).all()
    assert (out["positive"] == 0).all()

    never = make_module(tmp_path, augment={**NO_AUGMENTATION, "channel_dropout": {"prob": 0.0}})
    attach(never, training=True)
    assert never.channel_dropout is None
    assert never.on_after_batch_transfer(batch, 0) is batch  # nothing to apply


def test_channel_dropout_draws_per_sample_and_channel(tmp_path: Path) -> None:
    module = make_module(tmp_path, augment={**NO_AUGMENTATION, "channel_dropout": {"prob": 0.5}})
    batch = pair_batch(size=64)
    attach(module, training=True)
    out = module.on_after_batch_transfer(batch, 0)["anchor"]
    zeroed = (out == 0).flatten(2).all(2)  # (B, C): whole channel zero
    kept = (out == batch["anchor"]).flatten(2).all(2)
    assert (zeroed ^ kept).all()  # a channel is either dropped whole or untouched
    assert 0.2 < float(zeroed.float().mean()) < 0.8
    assert zeroed.any(1).sum() < 64  # not every sample loses a channel


def test_an_unknown_channel_to_drop_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError,
        match=r"augment\.channel_dropout\.channels: \['dapi'\] are not channels of the data "
        r"\['phase', 'reporter'\]",
    ):
        make_module(tmp_path, augment={"channel_dropout": {"prob": 0.5, "channels": ["dapi"]}})


# --------------------------------------------------------------------------- encoders
@pytest.mark.parametrize(("dims", "depth"), [("2d", 1), ("2.5d", 3), ("3d", 3)])
def test_encoder_layouts_against_networks_built_directly(
    tmp_path: Path, dims: str, depth: int
) -> None:
    module = make_module(tmp_path, encoder={"dims": dims}, data={"z_window": depth}).eval()
    if dims == "2.5d":
        network = build_model(
            "contrastive_resnet25d", in_channels=2, z_slices=3, stem_channels=16, **ENCODER
        )
    else:
        network = build_model(
            "contrastive_resnet", spatial_dims=2 if dims == "2d" else 3, in_channels=2, **ENCODER
        )
    network.load_state_dict(module.encoder.state_dict())
    network.eval()
    crops = torch.randn(3, 2, depth, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features, projections = module(crops)
        expected = network(crops[:, :, 0] if dims == "2d" else crops)
    assert tuple(features.shape) == (3, int(512 * 0.25))
    assert tuple(projections.shape) == (3, 16)
    assert features.dtype == projections.dtype == torch.float32
    torch.testing.assert_close(features, expected[0])
    torch.testing.assert_close(projections, expected[1])


def _run_yaml(tmp_path: Path, **sections: Any) -> Path:
    data: dict[str, Any] = {
        "experiments": "experiments.yaml",
        "encoder": ENCODER,
        "trainer": {"max_steps": 2},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_2d_encoder_on_a_z_window_is_a_config_error(tmp_path: Path) -> None:
    path = _run_yaml(tmp_path, data={"z_window": 3})
    with pytest.raises(
        ConfigError,
        match=rf"{path}.*encoder\.dims '2d' reads one slice, but data\.z_window is 3; use "
        r"encoder\.dims '2\.5d' or '3d' for z-stacks",
    ):
        load_run_config(path)
    config = load_run_config(path, ["encoder.dims=2.5d"])  # the same window, read as 2.5D
    assert config.encoder.dims == "2.5d"
    assert config.experiments == (tmp_path / "experiments.yaml").resolve()


def test_a_3d_convnext_is_a_config_error(tmp_path: Path) -> None:
    path = _run_yaml(tmp_path, encoder={"backbone": "convnext", "dims": "3d"}, data={"z_window": 3})
    with pytest.raises(
        ConfigError,
        match=rf"{path}.*encoder\.backbone 'convnext' is 2D only, found dims '3d'",
    ):
        load_run_config(path)


@pytest.mark.parametrize(
    ("shape", "found"),
    [((3, 3, 1, 16, 16), r"\(3, 3, 1, 16, 16\)"), ((3, 2, 16, 16), r"\(3, 2, 16, 16\)")],
)
def test_crops_of_the_wrong_layout_are_refused(
    tmp_path: Path, shape: tuple[int, ...], found: str
) -> None:
    module = make_module(tmp_path).eval()
    with pytest.raises(
        ModelError,
        match=r"crops must be \(B, 2, Z, Y, X\) for channels \['phase', 'reporter'\], "
        rf"found {found}",
    ):
        module(torch.zeros(shape))
