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


# --------------------------------------------------------------------------- parsing
def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--experiments", required=True, type=Path, help="experiments file (YAML or TOML)"
    )
    command.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the file"
    )
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    command.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v) or details (-vv)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Contrastive learning of cell embeddings from time-lapse microscopy across\n"
        "experiments: register experiments, build the cell index.",
        epilog="examples:\n"
        "  voxflow-contrast check-config --experiments experiments.yaml\n"
        "  voxflow-contrast build-index --experiments experiments.yaml index.tau=[1,2]\n\n"
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
    return parser


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
    from voxflow_utils import VoxflowUtilsError

    from .errors import ContrastError

    return (ContrastError, VoxflowUtilsError, VoxflowIOError, FileNotFoundError)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
