"""``demo``: synthetic experiments -> cell index -> training -> embeddings -> linear probe.

It runs exactly the public steps a user runs, on two small synthetic experiments (HCS
OME-Zarr plates, Ultrack-style tracking CSVs; infected cells grow a reporter spot after
``t_on``), and compares the trained encoder with the same encoder untrained on the question
a biologist asks of the embedding: is the condition readable at late time points, in fields
of view the probe never saw?
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from voxflow_utils import write_atomic

from .errors import ModelError

logger = logging.getLogger(__name__)

T_ON = 12
LATE = T_ON + 4
"""First frame probed: the phenotype is complete in every infected family (onset jitter 2,
ramp 3 frames)."""
PROBE_FOLDS = 4

# What the demo's run.yaml holds so that it trains in about two minutes on two CPU cores: a
# narrow ResNet-10 on 32 x 32 crops, a fixed number of steps. Batches come from one experiment
# at a time (the batch effect is no shortcut), half infected and half mock, three quarters
# from the frames where the phenotype appears and stays (the focal window).
DEMO_RUN = {
    "experiments": "data/experiments.yaml",
    "run_dir": "run",
    "seed": 0,
    "sampler": {
        "batch_size": 128,
        "group_by": "experiment",
        "stratify_by": "condition",
        "temporal_window": [T_ON, 23],
        "temporal_fraction": 0.75,
    },
    "data": {"val_split": "fov", "val_fraction": 0.25, "num_workers": 0},
    "encoder": {
        "backbone": "resnet",
        "dims": "2d",
        "depth": 10,
        "widen_factor": 0.25,
        "projection_dim": 64,
        "hidden_dim": 128,
    },
    "loss": {"temperature": 0.1, "beta": 0.5},
    "optim": {"lr": 0.003, "warmup_steps": 20},
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 300,
        "check_val_every_n_epoch": 10,
        "log_every_n_steps": 5,
    },
    "checkpoint": {"every_n_steps": 100},
}


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    out: Path
    config: Path
    checkpoint: Path
    embeddings: Path
    untrained_embeddings: Path
    accuracy: float
    untrained_accuracy: float
    macro_f1: float
    seconds: float
    summary: Path


def run_demo(
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    overrides: list[str] | None = None,
) -> DemoResult:
    """Run the whole pipeline on synthetic experiments under ``out``.

    Args:
        out: Folder for the data, the run, the embeddings and the probes.
        overwrite: Replace an existing ``out``.
        progress: Show progress bars.
        report: Receives the step summaries (the CLI prints them).
        overrides: Extra ``dotted.key=value`` run overrides (after the demo's own).

    Raises:
        ModelError: ``out`` exists and ``overwrite`` is false.
    """
    from .config import load_run_config
    from .embed import embed
    from .experiments import load_experiments
    from .index import build_index
    from .module import ContrastModule
    from .probe import linear_probe
    from .synthetic import make_experiments
    from .training import train

    say = report or logger.info
    started = time.perf_counter()
    out = Path(out).resolve()
    if out.exists():
        if not overwrite:
            raise ModelError(f"{out}: exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    say(
        f"[1/5] writing two synthetic experiments to {out / 'data'} (HCS OME-Zarr plates, "
        f"wells A/1 infected and A/2 mock, 2 fields each, 24 frames; infected cells grow a "
        f"reporter spot from frame ~{T_ON})"
    )
    experiments_file = make_experiments(out / "data", seed=0, t_on=T_ON, progress=progress)

    say("[2/5] build-index")
    index = build_index(load_experiments(experiments_file), progress=progress)
    say(index.summary.format())

    say("[3/5] train")
    config_path = out / "run.yaml"
    write_atomic(
        config_path,
        "# voxflow-contrast demo run (voxflow-contrast train --config run.yaml)\n"
        + yaml.safe_dump(DEMO_RUN, sort_keys=False),
    )
    config = load_run_config(config_path, overrides or [])
    result = train(config, progress=progress, report=say)

    say("[4/5] embed every cell with the trained encoder and with the same encoder untrained")
    embeddings = out / "embeddings.h5ad"
    say(embed(result.checkpoint, experiments_file, embeddings, progress=progress).format())
    untrained_path = out / "embeddings-untrained.h5ad"
    from lightning.pytorch import seed_everything

    seed_everything(config.seed, verbose=False)
    crop = config.data.crop or tuple(index.options["patch_size"])
    untrained = ContrastModule(config.model_dump(mode="json"), index.channels, crop)
    say(
        embed(
            "untrained (initial weights)",
            experiments_file,
            untrained_path,
            progress=progress,
            module=untrained,
        ).format()
    )

    say(
        f"[5/5] linear probe of the condition at frames >= {LATE}: {PROBE_FOLDS}-fold "
        "cross-validation by field of view (each cell scored by a probe that never saw its field)"
    )
    probes = {}
    for name, path in (("trained", embeddings), ("untrained", untrained_path)):
        probes[name] = linear_probe(
            path,
            "condition",
            split="fov",
            t_min=LATE,
            test_fraction=1 / PROBE_FOLDS,
            cross_validate=True,
            out_dir=out / "probe" / name,
        )
        say(f"  {name}: " + probes[name].format().replace("\n", "\n  "))
    trained, baseline = probes["trained"], probes["untrained"]
    seconds = time.perf_counter() - started
    summary = out / "summary.json"
    write_atomic(
        summary,
        json.dumps(
            {
                "accuracy": trained.accuracy,
                "macro_f1": trained.macro_f1,
                "untrained_accuracy": baseline.accuracy,
                "untrained_macro_f1": baseline.macro_f1,
                "steps": result.steps,
                "seconds": round(seconds, 1),
            },
            indent=2,
        )
        + "\n",
    )
    say(
        f"voxflow-contrast demo: condition at frames >= {LATE} in held-out fields: accuracy "
        f"{trained.accuracy:.3f} trained, {baseline.accuracy:.3f} untrained (macro-F1 "
        f"{trained.macro_f1:.3f} / {baseline.macro_f1:.3f}) in {seconds:.0f} s\n"
        f"  config       {config_path}\n  checkpoint   {result.checkpoint}\n"
        f"  embeddings   {embeddings} (untrained: {untrained_path})\n"
        f"  probes       {out / 'probe'}\n  summary      {summary}\n"
        f"  run          {config.run_dir} (logs, embedding scatters, training curves)"
    )
    return DemoResult(
        out=out,
        config=config_path,
        checkpoint=result.checkpoint,
        embeddings=embeddings,
        untrained_embeddings=untrained_path,
        accuracy=trained.accuracy,
        untrained_accuracy=baseline.accuracy,
        macro_f1=trained.macro_f1,
        seconds=seconds,
        summary=summary,
    )
