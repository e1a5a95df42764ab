"""``voxflow-contrast``: argument parsing only; each subcommand imports what it needs.

Errors voxflow raises on purpose (a bad experiments file, a missing plate or table, bad
lineage, no valid anchors) print as one ``voxflow-contrast: error: ...`` message and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .experiments import ExperimentsConfig

logger = logging.getLogger(__name__)

PROG = "voxflow-contrast"
LIBRARIES = ("voxflow_io", "voxflow_slicing", "voxflow_transforms", "voxflow_models")

BUILD_EXAMPLES = """\
examples:
  voxflow-contrast build-index --experiments experiments.yaml
  voxflow-contrast build-index --experiments experiments.yaml index.tau=[1,2] \\
      index.patch_size=[96,96] index.border=drop
  voxflow-contrast build-index --experiments experiments.yaml --rebuild --no-progress -v

The index is written to <index.cache_dir>/cell-index-<key>.parquet (default cache_dir:
.voxflow-contrast beside the experiments file) and reused while the experiment settings, the
index options, every tracking CSV (by content) and every plate's metadata are unchanged.
Overrides are dotted keys of the experiments file's sections (index.max_shift=8,
index.cache_dir=/scratch/index); relative paths are relative to the experiments file's folder.
"""

CHECK_EXAMPLES = """\
examples:
  voxflow-contrast check-config --experiments experiments.yaml
  voxflow-contrast check-config --experiments experiments.yaml index.tau=[2,4]

Checks the file, every plate (wells, channels, field images), every tracking table (columns,
numbers, coordinates inside the image, time points inside the movie, duplicated
(track_id, t)), the lineage (unknown parents, cycles, daughters before their parent ends),
the border policy and the valid anchors, as build-index does, without reading voxels (the
normalisation statistics are measured by build-index only) and without writing anything.
"""


TRAIN_EXAMPLES = """\
examples:
  voxflow-contrast train --config run.yaml
  voxflow-contrast train --config run.yaml trainer.max_steps=5000 trainer.devices=4 \\
      trainer.strategy=ddp trainer.precision=bf16-mixed
  voxflow-contrast train --config run.yaml --resume trainer.max_steps=8000

run.yaml names the experiments file (relative to run.yaml) and the run_dir; every section
(sampler, data, encoder, loss, optim, augment, trainer, checkpoint, logging) is optional.
--resume continues from run_dir/checkpoints/last.ckpt with the same sampler position.
"""

EMBED_EXAMPLES = """\
examples:
  voxflow-contrast embed --checkpoint runs/dynaclr/checkpoints/last.ckpt \\
      --experiments experiments.yaml --output embeddings.h5ad
  python -c "import anndata; print(anndata.read_h5ad('embeddings.h5ad'))"
"""

PROBE_EXAMPLES = """\
examples:
  voxflow-contrast linear-probe --embeddings embeddings.h5ad --label condition
  voxflow-contrast linear-probe --embeddings embeddings.h5ad --label condition --t-min 16 \\
      --split experiment --out probes/
  voxflow-contrast linear-probe --embeddings embeddings.h5ad --label condition --t-min 16 \\
      --test-fraction 0.25 --cross-validate
"""


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _setup_logging(verbosity: int) -> None:
    from voxflow_utils import setup_logging

    level = ("WARNING", "INFO", "DEBUG")[min(verbosity, 2)]
    setup_logging(level, rank=0)  # single process; rank=0 keeps torch from being imported
    if level != "DEBUG":
        for name in LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> ExperimentsConfig:
    _setup_logging(args.verbose)
    from .experiments import load_experiments

    return load_experiments(args.experiments, args.overrides)


def _describe_options(config: ExperimentsConfig) -> str:
    index = config.index
    return (
        f"index options: patch_size {list(index.patch_size)}, border {index.border}, "
        f"max_shift {index.max_shift}, tau {list(index.tau)}"
    )


# --------------------------------------------------------------------------- subcommands
def _build_index(args: argparse.Namespace) -> None:
    config = _load(args)
    from .index import build_index

    index = build_index(config, progress=not args.no_progress, rebuild=args.rebuild)
    done, _, why = index.origin.partition(": ")
    _say(f"{PROG} build-index: {done} the cell index ({why})")
    _say(_describe_options(config))
    _say(index.summary.format())
    _say(f"index: {index.path}")


def _check_config(args: argparse.Namespace) -> None:
    config = _load(args)
    from .index import check_experiments

    summary = check_experiments(config, progress=not args.no_progress)
    _say(
        f"{PROG} check-config: ok: {args.experiments} ({len(config.experiments)} experiment(s); "
        f"no voxels read, nothing written)"
    )
    _say(_describe_options(config))
    _say(summary.format())


def _train(args: argparse.Namespace) -> None:
    _setup_logging(args.verbose or 1)
    from .config import load_run_config
    from .training import train

    config = load_run_config(args.config, args.overrides)
    train(config, resume=args.resume, progress=not args.no_progress, report=_say)


def _embed(args: argparse.Namespace) -> None:
    _setup_logging(args.verbose)
    from .embed import embed

    result = embed(
        args.checkpoint,
        args.experiments,
        args.output,
        overrides=tuple(args.overrides),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        progress=not args.no_progress,
    )
    _say(result.format())


def _linear_probe(args: argparse.Namespace) -> None:
    _setup_logging(args.verbose)
    from .probe import linear_probe

    result = linear_probe(
        args.embeddings,
        args.label,
        split=args.split,
        representation=args.representation,
        t_min=args.t_min,
        t_max=args.t_max,
        test_fraction=args.test_fraction,
        seed=args.seed,
        out_dir=args.out,
        cross_validate=args.cross_validate,
    )
    _say(result.format())


def _demo(args: argparse.Namespace) -> None:
    _setup_logging(1 if args.verbose else 0)
    from .demo import run_demo

    run_demo(Path(args.out), overwrite=args.overwrite, progress=not args.no_progress, report=_say)


# --------------------------------------------------------------------------- parsing
def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--experiments", required=True, type=Path, help="experiments file (YAML or TOML)"
    )
    command.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the file"
    )
    _flags(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Contrastive learning of cell embeddings from time-lapse microscopy across\n"
        "experiments: register experiments, build the cell index, train an encoder, embed\n"
        "every cell as AnnData, probe the embeddings.",
        epilog="examples:\n"
        "  voxflow-contrast demo\n"
        "  voxflow-contrast check-config --experiments experiments.yaml\n"
        "  voxflow-contrast build-index --experiments experiments.yaml index.tau=[1,2]\n"
        "  voxflow-contrast train --config run.yaml trainer.max_steps=2000\n"
        "  voxflow-contrast embed --checkpoint run/checkpoints/last.ckpt \\\n"
        "      --experiments experiments.yaml --output embeddings.h5ad\n"
        "  voxflow-contrast linear-probe --embeddings embeddings.h5ad --label condition\n\n"
        "voxflow-contrast COMMAND --help describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build-index",
        help="build (or reuse) the cell index of an experiments file",
        description="Register the experiments, read every tracking table, link lineages\n"
        "through divisions, apply the border policy, measure normalisation statistics\n"
        "and mark valid anchors; print the summary per experiment and the parquet path.",
        epilog=BUILD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(build)
    build.add_argument(
        "--rebuild", action="store_true", help="build even if the stored index is up to date"
    )
    build.set_defaults(run=_build_index)

    check = commands.add_parser(
        "check-config",
        help="check an experiments file and its data without building anything",
        description="Every check of build-index, without reading voxels or writing files;\n"
        "prints ok and the summary build-index would report.",
        epilog=CHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(check)
    check.set_defaults(run=_check_config)

    train = commands.add_parser(
        "train",
        help="train an encoder on anchor/positive crops of an experiments file's cells",
        description="Build (or reuse) the cell index of the run's experiments file, split it\n"
        "by experiment or field of view, and train the encoder with the batch sampler;\n"
        "checkpoints, logs, embedding scatters and curves go to run_dir.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", required=True, type=Path, help="run.yaml")
    train.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of run.yaml"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in run_dir from last.ckpt"
    )
    _flags(train)
    train.set_defaults(run=_train)

    embed = commands.add_parser(
        "embed",
        help="write features and projections of every cell as AnnData (.h5ad)",
        description="Embed every observation of the cell index with a trained checkpoint;\n"
        "X holds the features, obsm['X_projection'] the projections, obs every index\n"
        "column. Deterministic: the same checkpoint and data give the same numbers.",
        epilog=EMBED_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("--checkpoint", required=True, type=Path, help="a run's last.ckpt")
    embed.add_argument(
        "--experiments", required=True, type=Path, help="experiments file (YAML or TOML)"
    )
    embed.add_argument("--output", required=True, type=Path, help="the .h5ad file to write")
    embed.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the file"
    )
    embed.add_argument("--batch-size", type=int, default=256, help="crops per forward pass")
    embed.add_argument("--num-workers", type=int, default=0, help="loader processes")
    embed.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    _flags(embed)
    embed.set_defaults(run=_embed)

    probe = commands.add_parser(
        "linear-probe",
        help="fit a logistic regression of a label on embeddings, held-out fields of view",
        description="Logistic regression (scikit-learn) of an obs column of an embeddings\n"
        "file, evaluated on held-out fields of view (or experiments, or rows); prints and\n"
        "writes accuracy and macro-F1 as JSON and a confusion-matrix PNG.",
        epilog=PROBE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument("--embeddings", required=True, type=Path, help="an embed .h5ad file")
    probe.add_argument("--label", required=True, help="obs column to predict, e.g. condition")
    probe.add_argument(
        "--split",
        default="fov",
        choices=("fov", "experiment", "random"),
        help="what the test set holds out (default fov)",
    )
    probe.add_argument(
        "--representation",
        default="features",
        choices=("features", "projections"),
        help="X (features, default) or obsm['X_projection']",
    )
    probe.add_argument("--t-min", type=int, default=None, help="first frame used")
    probe.add_argument("--t-max", type=int, default=None, help="last frame used")
    probe.add_argument("--test-fraction", type=float, default=0.25, help="share held out")
    probe.add_argument("--seed", type=int, default=0, help="seed of the split")
    probe.add_argument(
        "--cross-validate",
        action="store_true",
        help="score every fold of the group split in turn and pool the predictions",
    )
    probe.add_argument(
        "--out", type=Path, default=None, help="folder for the JSON and PNG (default: beside)"
    )
    _flags(probe)
    probe.set_defaults(run=_linear_probe)

    demo = commands.add_parser(
        "demo",
        help="synthetic experiments -> index -> train -> embed -> linear probe, on a CPU",
        description="Writes two synthetic experiments, builds the index, trains a small\n"
        "encoder on the CPU, embeds every cell with it and with the untrained encoder, and\n"
        "prints the linear-probe accuracy of the condition at late frames for both.",
        epilog="examples:\n  voxflow-contrast demo\n"
        "  voxflow-contrast demo --out /scratch/contrast-demo --overwrite --no-progress\n\n"
        "Then train further: voxflow-contrast train --config voxflow-contrast-demo/run.yaml "
        "run_dir=run2 trainer.max_steps=1000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="voxflow-contrast-demo", help="folder for everything")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("--verbose", action="store_true", help="log every step")
    demo.set_defaults(run=_demo)
    return parser


def _flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--no-progress", action="store_true", help="no progress bars")
    command.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v) or details (-vv)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``voxflow-contrast`` command: 0 on success, 2 on a handled error
    (after ``voxflow-contrast: error: <message>`` on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:
        # The libraries are imported only once an error needs classifying.
        if isinstance(exc, _handled_errors()):
            sys.stderr.write(f"{PROG}: error: {exc}\n")
            return 2
        raise
    return 0


def _handled_errors() -> tuple[type[BaseException], ...]:
    # Every voxflow library has one base error; these are messages for the user, not bugs.
    from voxflow_io import VoxflowIOError
    from voxflow_models import ModelError as ModelsError
    from voxflow_transforms import TransformError
    from voxflow_utils import VoxflowUtilsError

    from .errors import ContrastError

    return (
        ContrastError,
        VoxflowUtilsError,
        VoxflowIOError,
        ModelsError,
        TransformError,
        FileNotFoundError,
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
