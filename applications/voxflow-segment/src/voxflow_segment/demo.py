"""``demo``: synthetic data -> init -> train -> predict -> evaluate, on a CPU in minutes.

It uses exactly the public steps a user runs: the dataset is written in voxflow-io's
``images/ labels/`` layout (OME-Zarr and TIFF), planned by ``init``, trained by ``train``,
and a held-out volume goes through ``predict`` and ``evaluate``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tifffile

from voxflow_utils import write_atomic

from .config import RunConfig, load_run_config
from .errors import OutputExistsError
from .planning import inputs_from_folder, plan, render_config
from .synthetic import make_volume, write_dataset

logger = logging.getLogger(__name__)

DEMO_SHAPE = (48, 80, 80)

# What the demo changes in the planned config so that it trains in about three minutes on two
# CPU cores: a small network, small patches, a fixed number of steps.
DEMO_OVERRIDES = [
    "data.targets={structures: {classes: [0, 1, 2], class_names: [background, tube, sheet]}}",
    "patch.size=[32, 32, 32]",
    "model.kwargs.filters=[16, 32, 64, 128]",
    "model.kwargs.kernel_size=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]",
    "model.kwargs.strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]",
    "model.kwargs.upsample_kernel_size=[[2, 2, 2], [2, 2, 2], [2, 2, 2]]",
    "model.kwargs.res_block=false",
    "loader.batch_size=2",
    "loader.num_workers=0",
    "sampler.batches_per_epoch=125",
    "sampler.validation_windows=8",
    "optim.optimizer=adamw",
    "optim.lr=0.003",
    "optim.weight_decay=0.0001",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.max_steps=500",
    "trainer.val_check_interval=125",
    "checkpoint.every_n_steps=125",
    "aux_targets={tube_distance: {source: structures, classes: [1], weight: 0.2}}",
    "augment.affine=null",
    "augment.gamma=null",
    "augment.blur=null",
]


@dataclass
class DemoResult:
    out: Path
    config: Path
    checkpoint: Path
    prediction: Path
    metrics: Path
    dice: dict[str, float]
    seconds: float


def run_demo(
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    overrides: list[str] | None = None,
) -> DemoResult:
    """Run the whole pipeline on synthetic data under ``out``.

    Args:
        out: Folder for the data, the run, the prediction and the metrics.
        overwrite: Replace an existing ``out``.
        progress: Show progress bars.
        report: Receives the step summaries (the CLI prints them).
        overrides: Extra ``dotted.key=value`` config overrides (after the demo's own).
    """
    from .evaluation import evaluate
    from .prediction import predict
    from .training import train

    say = report or logger.info
    started = time.perf_counter()
    out = Path(out).resolve()
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out}: exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    data = out / "data"
    say(f"[1/5] writing a synthetic dataset to {data} (3 volumes {DEMO_SHAPE}, OME-Zarr and TIFF)")
    write_dataset(data, volumes=3, shape=DEMO_SHAPE, seed=0)
    test = out / "test"
    test.mkdir(parents=True)
    image, labels = make_volume(DEMO_SHAPE, seed=999)
    tifffile.imwrite(test / "image.tif", image, metadata={"axes": "ZYX"})
    tifffile.imwrite(test / "labels.tif", labels, metadata={"axes": "ZYX"})

    say("[2/5] init: planning the run from the data")
    planned = plan(inputs_from_folder(data), run_dir=out / "run", memory_gb=1.0, base_filters=12)
    for reason in planned.reasons:
        say(f"  - {reason}")
    config_path = out / "run.yaml"
    write_atomic(config_path, render_config(planned.config, planned.reasons))
    config: RunConfig = load_run_config(config_path, [*DEMO_OVERRIDES, *(overrides or [])])
    write_atomic(config_path, render_config(config, planned.reasons))

    say("[3/5] train")
    result = train(config, progress=progress, report=say)

    say("[4/5] predict the held-out volume")
    prediction = out / "prediction.ome.zarr"
    predicted = predict(result.checkpoint, test / "image.tif", prediction, tta=2, progress=progress)
    say(f"  {predicted.output} in {predicted.seconds:.1f} s")

    say("[5/5] evaluate")
    metrics_path = out / "metrics.json"
    evaluation = evaluate(prediction, test / "labels.tif", out=metrics_path, progress=progress)
    say(evaluation.table())
    scores = evaluation.to_json()["targets"]["structures"]["classes"]
    dice = {entry["name"]: entry["dice"] for entry in scores.values()}
    seconds = time.perf_counter() - started
    say(
        "voxflow-segment demo: held-out Dice "
        + ", ".join(f"{name} {value:.3f}" for name, value in dice.items())
        + f" in {seconds:.0f} s\n"
        f"  config      {config_path}\n  checkpoint  {result.checkpoint}\n"
        f"  prediction  {prediction}\n  metrics     {metrics_path}\n"
        f"  run         {config.run_dir} (logs, previews, training curves)"
    )
    return DemoResult(out, config_path, result.checkpoint, prediction, metrics_path, dice, seconds)
