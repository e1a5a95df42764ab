"""``voxflow-segment``: argument parsing only; each subcommand imports what it needs.

Errors voxflow raises on purpose (bad config, missing file, mismatched data) print as one
``voxflow-segment: error: ...`` message and exit with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from voxflow_utils import PRECISIONS

logger = logging.getLogger(__name__)

PROG = "voxflow-segment"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _setup_logging(level: str = "INFO", run_dir: Path | None = None) -> None:
    from voxflow_utils import setup_logging

    setup_logging(level, run_dir=run_dir)
    if level != "DEBUG":
        # The application reports milestones; the libraries' per-volume details go to DEBUG
        # runs only, so the console shows progress bars and summaries, not every window count.
        for name in ("voxflow_io", "voxflow_slicing", "voxflow_transforms", "voxflow_models"):
            logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- subcommands
def _init(args: argparse.Namespace) -> None:
    from voxflow_utils import write_atomic

    from .planning import inputs_from_folder, inputs_from_pairs, plan, render_config

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        _fail(f"{out}: exists; pass --overwrite to replace it")
    if args.data is not None:
        if args.image or args.labels or args.mask:
            _fail("give either --data DIR or --image/--labels pairs, not both")
        inputs = inputs_from_folder(args.data)
    else:
        if not args.image:
            _fail("give --data DIR (images/ labels/ [masks/]) or --image IMG --labels LBL")
        inputs = inputs_from_pairs(
            [Path(p) for p in args.image],
            [Path(p) for p in args.labels or []],
            [Path(p) for p in args.mask or []],
            target=args.target,
        )
    run_dir = args.run_dir or (out.resolve().parent / "runs" / out.stem)
    result = plan(
        inputs,
        run_dir=run_dir,
        memory_gb=args.memory_gb,
        base_filters=args.base_filters,
        precision=args.precision,
        seed=args.seed,
    )
    write_atomic(out, render_config(result.config, result.reasons))
    _say("voxflow-segment init: planned from the data")
    for reason in result.reasons:
        _say(f"  - {reason}")
    _say(f"wrote {out}\nnext: {PROG} check-config {out} && {PROG} train --config {out}")


def _train(args: argparse.Namespace) -> None:
    from .config import load_run_config

    config_path = args.config
    if config_path is None:
        run_dirs = [o.split("=", 1)[1] for o in args.overrides if o.startswith("run_dir=")]
        if not args.resume or not run_dirs:
            _fail("give --config run.yaml (or --resume run_dir=PATH to continue a run)")
        config_path = Path(run_dirs[-1]) / "run.yaml"
        if not config_path.is_file():
            _fail(f"{config_path}: not found; nothing to resume in {run_dirs[-1]}")
    config = load_run_config(config_path, _overrides(args.overrides))
    _setup_logging(config.logging.level, config.run_dir)
    from .training import train

    train(config, resume=args.resume, progress=not args.no_progress, report=_say)


def _overrides(overrides: Sequence[str]) -> list[str]:
    # run_dir given on the command line is relative to the working directory, not the file.
    out = []
    for override in overrides:
        if override.startswith("run_dir="):
            override = f"run_dir={Path(override.split('=', 1)[1]).resolve()}"
        out.append(override)
    return out


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, found {type(value).__name__}")
    return value


def _predict(args: argparse.Namespace) -> None:
    _setup_logging()
    from .config import load_run_config
    from .prediction import predict

    expected = load_run_config(args.config) if args.config else None
    result = predict(
        args.checkpoint,
        args.input,
        args.output,
        tta=args.tta,
        probabilities=args.probabilities,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        overlap=args.overlap,
        blend=args.blend,
        chunks=args.chunks,
        block_shape=args.block_shape,
        sharded=args.sharded,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        precision=args.precision,
        level=args.level,
        mask=args.mask,
        storage_options=args.storage_options,
        cache_bytes=args.cache_mb << 20,
        expected=expected,
        progress=not args.no_progress,
    )
    if result.rank != 0:
        return  # one summary per run
    _say(
        f"voxflow-segment predict: {result.output} ({'x'.join(map(str, result.shape))}) in "
        f"{result.seconds:.1f} s on {result.world_size} process(es)\n"
        f"  blocks      {result.blocks}: {result.predicted} predicted, {result.empty} empty "
        f"(written as 0), {result.resumed} finished by an earlier run\n"
        f"  windows     {result.windows} x {args.tta} flip(s) (the grid has "
        f"{result.grid_windows}; windows across block borders run in each block)\n"
        f"  input read  {result.read_amplification:.2f}x its size (chunks decoded / bytes needed)"
    )


def _evaluate(args: argparse.Namespace) -> None:
    labels: Path | dict[str, Path]
    pairs = [item.split("=", 1) for item in args.labels]
    if len(pairs) == 1 and len(pairs[0]) == 1:
        labels = Path(pairs[0][0])
    else:
        if any(len(p) != 2 for p in pairs):
            _fail("with several --labels, name each target: --labels TARGET=PATH")
        labels = {p[0]: Path(p[1]) for p in pairs}
    _setup_logging()
    from .evaluation import evaluate

    result = evaluate(args.prediction, labels, out=args.out, progress=not args.no_progress)
    _say(result.table())
    if args.out:
        _say(f"wrote {args.out}")


def _check_config(args: argparse.Namespace) -> None:
    from .config import load_run_config

    config = load_run_config(args.config, _overrides(args.overrides))
    _setup_logging(config.logging.level)
    from .check import check_config

    _say(check_config(config, progress=not args.no_progress))


def _demo(args: argparse.Namespace) -> None:
    _setup_logging("WARNING" if not args.verbose else "INFO")
    from .demo import run_demo

    run_demo(Path(args.out), overwrite=args.overwrite, progress=not args.no_progress, report=_say)


# --------------------------------------------------------------------------- parsing
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Patch-based segmentation of large 2D/3D volumes: plan, train, predict, "
        "evaluate.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init",
        help="plan a complete, commented run.yaml from the data",
        description="Plan a training config from a dataset fingerprint (patch size, network, "
        "normalisation, classes, validation split) and say why.",
    )
    init.add_argument("--data", type=Path, help="folder with images/ labels/ [masks/]")
    init.add_argument("--image", action="append", help="image volume (repeat)")
    init.add_argument("--labels", action="append", help="labels of the image before (repeat)")
    init.add_argument("--mask", action="append", help="valid-region mask per image (optional)")
    init.add_argument(
        "--target", default="target", help="target name for --labels (default: target)"
    )
    init.add_argument("--out", required=True, type=Path, help="config file to write (run.yaml)")
    init.add_argument("--run-dir", type=Path, help="where training writes (default: runs/<name>)")
    init.add_argument("--memory-gb", type=float, default=8.0, help="accelerator memory to plan for")
    init.add_argument("--base-filters", type=int, default=32, help="first-level channels")
    init.add_argument(
        "--precision",
        default="auto",
        choices=["auto", *PRECISIONS],
        help="trainer precision (default: auto: bf16-mixed with CUDA, else 32-true)",
    )
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    init.set_defaults(run=_init)

    train = commands.add_parser(
        "train",
        help="train (or --resume) a run",
        description="Train with PyTorch Lightning. Overrides: dotted.key=value, e.g. "
        "trainer.max_steps=100 trainer.devices=2 trainer.strategy=ddp "
        "trainer.precision=bf16-mixed run_dir=PATH.",
    )
    train.add_argument("--config", type=Path, help="run.yaml")
    train.add_argument("--resume", action="store_true", help="continue the run in run_dir")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    train.set_defaults(run=_train)

    predict = commands.add_parser(
        "predict",
        help="predict a volume into an OME-Zarr",
        description="Sliding-window prediction, block by block, with Gaussian blending and "
        "optional flip TTA; normalisation comes from the checkpoint.",
    )
    predict.add_argument("--checkpoint", required=True, type=Path)
    predict.add_argument("--input", required=True, help="image to predict (path or URL)")
    predict.add_argument(
        "--output", required=True, help="OME-Zarr to write (path or URL: s3://, gs://)"
    )
    predict.add_argument("--tta", type=int, default=1, help="flip combinations (1-8 in 3D)")
    predict.add_argument("--probabilities", action="store_true", help="write float16 probabilities")
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (without it, an unfinished one of the same run resumes)",
    )
    predict.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="windows per forward pass (default: 1 on the CPU, 4 on a GPU)",
    )
    predict.add_argument("--overlap", type=float, default=0.5, help="window overlap (0-1)")
    predict.add_argument(
        "--blend",
        default="gaussian",
        choices=["gaussian", "hann", "constant"],
        help="window weights",
    )
    predict.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        help="output chunk shape (default: >= 2 patches and 128 voxels per axis)",
    )
    predict.add_argument(
        "--block-shape",
        type=int,
        nargs="+",
        help="unit of work, a multiple of the chunks (default: the chunks on a CPU, >= 4 "
        "patches per axis on a GPU)",
    )
    predict.add_argument(
        "--sharded", action="store_true", help="store each block as one shard (Zarr v3 sharding)"
    )
    predict.add_argument(
        "--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"], help="where"
    )
    predict.add_argument(
        "--devices", type=int, default=1, help="processes per node (one per GPU; > 1 runs DDP)"
    )
    predict.add_argument("--num-nodes", type=int, default=1, help="nodes of a DDP run")
    predict.add_argument(
        "--precision", default="32", choices=["32", "bf16", "16"], help="forward-pass precision"
    )
    predict.add_argument("--level", type=int, default=0, help="pyramid level of the input")
    predict.add_argument(
        "--mask", help="skip blocks where this mask (path or URL, full or integer-downsampled) is 0"
    )
    predict.add_argument(
        "--storage-options",
        type=_json_object,
        help='fsspec options for URLs as JSON, e.g. \'{"endpoint_url": "http://host:9000"}\'',
    )
    predict.add_argument(
        "--cache-mb", type=int, default=256, help="decoded input chunks kept per process (MiB)"
    )
    predict.add_argument("--config", type=Path, help="refuse a checkpoint of another model config")
    predict.add_argument("--no-progress", action="store_true")
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="Dice, IoU, precision, recall of a prediction",
        description="Blockwise metrics per target and class; prints a table, writes JSON.",
    )
    evaluate.add_argument("--prediction", required=True, type=Path)
    evaluate.add_argument(
        "--labels", required=True, action="append", help="labels (or TARGET=PATH, repeat)"
    )
    evaluate.add_argument("--out", type=Path, help="metrics JSON to write")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    check = commands.add_parser(
        "check-config",
        help="validate a config and its data without training",
        description="Load the config, open and check every volume, scan the labels, build the "
        "patch index and run the network once on a patch.",
    )
    check.add_argument("config", type=Path)
    check.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    check.add_argument("--no-progress", action="store_true")
    check.set_defaults(run=_check_config)

    demo = commands.add_parser(
        "demo",
        help="synthetic data -> init -> train -> predict -> evaluate",
        description="Write a small synthetic 3D dataset (tubes and sheets in textured noise), "
        "plan, train a few minutes on the CPU, predict a held-out volume and score it.",
    )
    demo.add_argument("--out", default="voxflow-segment-demo", help="folder for everything")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--verbose", action="store_true", help="log every step")
    demo.set_defaults(run=_demo)
    return parser


class _UsageError(Exception):
    pass


def _fail(message: str) -> None:
    raise _UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``voxflow-segment`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except _UsageError as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{PROG}: interrupted\n")
    except Exception as exc:
        # The libraries are imported only once an error needs classifying, so that a usage
        # mistake is answered without importing torch.
        if isinstance(exc, _handled_errors()):
            parser.exit(2, f"{PROG}: error: {exc}\n")
        raise
    return 0


def _handled_errors() -> tuple[type[BaseException], ...]:
    # Every voxflow library has one base error; these are messages for the user, not bugs.
    from voxflow_io import VoxflowIOError
    from voxflow_models import ModelError
    from voxflow_slicing import SlicingError
    from voxflow_transforms import TransformError
    from voxflow_utils import VoxflowUtilsError

    from .errors import SegmentError

    return (
        SegmentError,
        VoxflowIOError,
        SlicingError,
        TransformError,
        ModelError,
        VoxflowUtilsError,
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
