"""Synthetic time-lapse experiments for the demo and the tests.

``make_experiments`` writes, per experiment, an OME-Zarr HCS plate with an infected well
(``A/1``) and a mock well (``A/2``), Ultrack-style tracking CSVs for every field of view, and
an ``experiments.yaml`` that ``load_experiments`` and ``build_index`` accept.

What the images show:

- **Cells** are textured ellipses that drift by a persistent random walk, turn slowly and
  stay inside the image (their centres reflect at the borders). Some cells divide once per
  movie: the parent track ends at frame ``t``, two smaller daughters start at ``t + 1`` on
  either side of it along its long axis and grow back. A cell's texture and its puncta change
  from frame to frame (the texture's phases drift, the puncta circle around the centre), as
  organelles do: they are no fixed fingerprint that would let an encoder recognise a cell one
  frame later without looking at its state.
- **Channels**: a phase-like channel (the cell body with its texture; bright cells on a dark
  background, or dark cells for the bright-field names) and a reporter channel (diffuse
  fluorescence with a few faint puncta, its level varying from cell to cell).
- **Phenotype**: in the infected well, from about ``t_on`` on (each family has its own onset,
  ``t_on`` +- ``ONSET_JITTER`` frames, reached over ``RAMP_FRAMES`` frames), part of the
  reporter moves from the cytoplasm into one bright compact spot near the cell's centre. The
  cell's total reporter stays the same, so a crop's mean intensity does not give it away; its
  spatial distribution does. Mock cells never change; before the onset both look alike.
- **Batch effect**: every experiment has its own gain and offset per channel, noise level,
  background texture and plate channel names (and order), so experiment identity is the easy
  signal that dataset-aware sampling has to defeat.

Everything is drawn from ``seed``: the same arguments give byte-identical CSVs and identical
voxels. The folder is written under a hidden sibling name and renamed at the end, so a
half-written dataset never looks complete.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from voxflow_io import create_plate

from .errors import ExperimentError

logger = logging.getLogger(__name__)

COMMON_CHANNELS = ("phase", "reporter")
WELLS = {"A/1": "infected", "A/2": "mock"}
"""Well -> condition in every plate."""
PLATE_CHANNELS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("Phase", "phase"), ("GFP", "reporter")),
    (("mNeon", "reporter"), ("BF", "phase")),  # reporter first: the mapping is exercised
    (("Phase3D", "phase"), ("RFP", "reporter")),
    (("mScarlet", "reporter"), ("DIC", "phase")),
)
"""Plate channel names and their common channel, per experiment (cycled)."""
DARK_CELLS = frozenset({"BF", "DIC"})
"""Phase-like channels in which cells are darker than the background."""
FRAME_INTERVALS_MINUTES = (30.0, 20.0, 15.0, 10.0)
PIXEL_SIZES_UM = (0.325, 0.65, 0.4, 0.5)
PATCH_SIZE = 32
"""Side of the square crop written to the ``index:`` section (cells are at most 15 px long)."""
TAU = (1, 2)
MIN_SIZE = 48
MAX_COVERAGE = 0.6
"""Most of a field that the cells may cover if every cell divided."""

SEMI_AXES = ((5.5, 7.5), (4.5, 6.0))
"""Ranges of the long and short semi-axes of a cell in pixels."""
STEP = 0.8
"""Deviation of the per-frame velocity change in pixels (the walk keeps 70 % of its
velocity)."""
DIVIDING_FRACTION = 0.4
DAUGHTER_SCALE = 0.75
GROWTH_FRAMES = 4
ONSET_JITTER = 2
RAMP_FRAMES = 3
RELOCATED = 0.75
"""Fraction of the reporter that moves into the spot once the phenotype is complete."""
SPOT_SIGMA = 2.0
PUNCTA_SIGMA = 1.0
TEXTURE_DRIFT = 1.0
"""Largest change per frame of a texture wave's phase (radians): the texture is no fixed
fingerprint of a cell."""
PUNCTA_TURN = 0.8
"""Largest turn per frame (radians) of a punctum around the cell's centre."""
PUNCTA_LEVEL = 0.5
EXPRESSION = (0.6, 1.4)
COUNTS_PER_UNIT = 1000.0
BASE_LEVEL = 1.5
"""Background level in signal units (above the offset), so that noise is never clipped at 0;
dark-cell channels add the cells' contrast to it."""


@dataclass
class _Cell:
    """One track: its observations and the appearance it keeps."""

    track_id: int
    parent_track_id: int
    start: int
    semi_axes: tuple[float, float]
    expression: float
    onset: float  # first frame of the phenotype; inf for cells that never show it
    waves: np.ndarray  # (3, 4): wave vector (2), phase and phase drift per frame of the texture
    puncta: np.ndarray  # (P, 3): position in the cell frame (semi-axis units), turn per frame
    spot: np.ndarray  # (2,) spot position in the cell frame, pixels
    y: list[float] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    angle: list[float] = field(default_factory=list)

    @property
    def frames(self) -> range:
        return range(self.start, self.start + len(self.y))


@dataclass(frozen=True)
class _Style:
    """The batch effect of one experiment; arrays hold one value per common channel."""

    gain: np.ndarray
    offset: np.ndarray
    base: np.ndarray
    noise: np.ndarray
    texture: np.ndarray
    texture_scale: float
    polarity: float


def make_experiments(
    folder: str | os.PathLike[str],
    *,
    seed: int = 0,
    experiments: int = 2,
    fields: int = 2,
    frames: int = 24,
    size: int = 96,
    cells: int = 8,
    t_on: int = 12,
    depth: int = 1,
    progress: bool = False,
) -> Path:
    """Write synthetic experiments (plates, tracking CSVs, ``experiments.yaml``) to ``folder``.

    Layout (relative paths in the YAML, so the folder can be moved)::

        folder/experiments.yaml
        folder/exp1.ome.zarr                       wells A/1 (infected), A/2 (mock)
        folder/exp1_tracks/A/1/0/tracks.csv ...    one CSV per field of view

    Every field image is ``(frames, 2, depth, size, size)`` uint16, chunked one frame per
    chunk and finished. The CSVs have Ultrack's columns ``track_id, t, z, y, x, id,
    parent_track_id, parent_id`` (``-1`` for roots); ``z`` is ``depth // 2``, where cells
    are in focus. The YAML maps the plates' channels onto ``[phase, reporter]`` and has an
    ``index:`` section with ``patch_size [32, 32]``, ``border: shift``, ``max_shift: 16``
    and ``tau [1, 2]``.

    Everything is written into ``.<name>.partial`` beside ``folder`` and renamed to
    ``folder`` at the end: an interrupted call leaves only that hidden folder, which the next
    call removes.

    Args:
        folder: Folder to create; it must not exist.
        seed: Seed of every random choice (an integer >= 0).
        experiments: Number of experiments (plates), each with its own batch effect.
        fields: Fields of view per well.
        frames: Time points per movie; more than ``t_on``.
        size: Side of the square fields in pixels (>= 48, and large enough for the cells).
        cells: Cells per field at the first frame; about 40 % of them divide once.
        t_on: Frame around which infected cells develop the phenotype (>= 1).
        depth: Z planes; cells are in focus at ``depth // 2`` and fade away from it.
        progress: Show a progress bar over fields of view.

    Returns:
        The path of ``experiments.yaml``.

    Raises:
        ExperimentError: an argument of the wrong type or out of range (named), or
            ``folder`` exists.
    """
    seed = _integer(seed, "seed", 0)
    experiments = _integer(experiments, "experiments", 1)
    fields = _integer(fields, "fields", 1)
    frames = _integer(frames, "frames", 2)
    size = _integer(size, "size", MIN_SIZE)
    cells = _integer(cells, "cells", 1)
    t_on = _integer(t_on, "t_on", 1)
    depth = _integer(depth, "depth", 1)
    if not isinstance(progress, bool):
        raise ExperimentError(
            f"make_experiments: progress must be True or False, found {progress!r}"
        )
    if frames <= t_on:
        raise ExperimentError(
            f"make_experiments: frames={frames} must be greater than t_on={t_on} (the "
            f"phenotype starts at frame t_on; the movie must go on after it)"
        )
    _check_room(size, cells)
    folder = Path(folder)
    if folder.exists():
        raise ExperimentError(
            f"make_experiments: {folder} exists; the synthetic experiments are written to a "
            f"new folder (remove it or choose another)"
        )
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        logger.warning("removing %s, left by an interrupted make_experiments", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)

    entries = []
    shape = (frames, len(COMMON_CHANNELS), depth, size, size)
    bar = tqdm(
        total=experiments * len(WELLS) * fields,
        desc="synthetic fields",
        unit="fov",
        disable=not progress,
    )
    with bar:
        for number in range(experiments):
            entries.append(
                _write_experiment(partial, number, seed, shape, fields, cells, t_on, bar)
            )
    config = {
        "channels": list(COMMON_CHANNELS),
        "experiments": entries,
        "index": {
            "patch_size": [PATCH_SIZE, PATCH_SIZE],
            "border": "shift",
            "max_shift": PATCH_SIZE // 2,
            "tau": list(TAU),
        },
    }
    (partial / "experiments.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    partial.rename(folder)
    logger.info(
        "wrote %d synthetic experiment(s) of %d field(s) of %s (T, C, Z, Y, X) to %s",
        experiments,
        experiments * len(WELLS) * fields,
        shape,
        folder,
    )
    return folder / "experiments.yaml"


def _integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ExperimentError(
            f"make_experiments: {name} must be an integer, found {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise ExperimentError(f"make_experiments: {name} must be >= {minimum}, found {value}")
    return int(value)


def _check_room(size: int, cells: int) -> None:
    """The cells (all divided, at their largest) must cover at most ``MAX_COVERAGE``."""
    largest = math.pi * SEMI_AXES[0][1] * SEMI_AXES[1][1]
    needed = math.ceil(math.sqrt(2 * cells * largest / MAX_COVERAGE))
    if size < needed:
        raise ExperimentError(
            f"make_experiments: size={size} is too small for cells={cells}: up to "
            f"{2 * cells} cells (after divisions) of up to {largest:.0f} px² would cover "
            f"{2 * cells * largest / size**2:.0%} of a {size}x{size} field (at most "
            f"{MAX_COVERAGE:.0%}); use size >= {needed} or fewer cells"
        )


def _write_experiment(
    root: Path,
    number: int,
    seed: int,
    shape: tuple[int, int, int, int, int],
    fields: int,
    cells: int,
    t_on: int,
    bar: tqdm,
) -> dict[str, Any]:
    """Write one plate and its tables; return its entry of the experiments file."""
    name = f"exp{number + 1}"
    channels = PLATE_CHANNELS[number % len(PLATE_CHANNELS)]
    order = [COMMON_CHANNELS.index(common) for _, common in channels]  # plate -> common
    style = _style(np.random.default_rng([seed, number]), channels)
    frames, _, depth, size, _ = shape
    pixel_size = PIXEL_SIZES_UM[number % len(PIXEL_SIZES_UM)]
    plate = create_plate(
        root / f"{name}.ome.zarr",
        wells=list(WELLS),
        fields=fields,
        shape=shape,
        dtype="uint16",
        chunks=(1, *shape[1:]),
        channel_names=[plate_name for plate_name, _ in channels],
        voxel_size=(1.0, 1.0, 1.0, pixel_size, pixel_size),
        unit="micrometer",
        name=name,
    )
    tracks_root = root / f"{name}_tracks"
    for well_number, position in enumerate(plate.positions()):
        rng = np.random.default_rng([seed, number, well_number, int(position.field) + 1])
        infected = WELLS[position.well] == "infected"
        simulated = _simulate(
            rng, frames=frames, size=size, cells=cells, t_on=t_on, infected=infected
        )
        image = _render(simulated, rng, style, frames=frames, depth=depth, size=size)
        with position.writer() as writer:
            writer.write_region((0, 0, 0, 0, 0), image[:, order])
        table = _table(simulated, z=depth // 2)
        out = tracks_root / position.row / position.column / position.field
        out.mkdir(parents=True)
        table.to_csv(out / "tracks.csv", index=False, float_format="%.3f")
        logger.debug(
            "%s %s: %d tracks, %d observations", name, position.key, len(simulated), len(table)
        )
        bar.update()
    return {
        "name": name,
        "plate": f"{name}.ome.zarr",
        "tracks_root": f"{name}_tracks",
        "channels": {plate_name: common for plate_name, common in channels},
        "conditions": dict(WELLS),
        "frame_interval_minutes": FRAME_INTERVALS_MINUTES[number % len(FRAME_INTERVALS_MINUTES)],
        "pixel_size_um": pixel_size,
    }


def _style(rng: np.random.Generator, channels: tuple[tuple[str, str], ...]) -> _Style:
    """Draw an experiment's gain, offset, noise and background texture per common channel."""
    phase_name = next(plate_name for plate_name, common in channels if common == "phase")
    count = len(COMMON_CHANNELS)
    polarity = -1.0 if phase_name in DARK_CELLS else 1.0
    base = np.full(count, BASE_LEVEL)
    base[COMMON_CHANNELS.index("phase")] += 1.3 if polarity < 0 else 0.0
    return _Style(
        gain=rng.uniform(0.5, 2.0, count),
        offset=rng.uniform(100.0, 2000.0, count),
        base=base,
        noise=rng.uniform(0.05, 0.15, count),
        texture=rng.uniform(0.04, 0.12, count),
        texture_scale=float(rng.uniform(2.0, 8.0)),
        polarity=polarity,
    )


def _new_cell(
    rng: np.random.Generator,
    track_id: int,
    parent: int,
    start: int,
    onset: float,
    expression: float,
) -> _Cell:
    long_axis = rng.uniform(*SEMI_AXES[0])
    short_axis = min(rng.uniform(*SEMI_AXES[1]), long_axis)
    frequencies = rng.uniform(0.15, 0.35, 3) * 2 * np.pi
    directions = rng.uniform(0, 2 * np.pi, 3)
    waves = np.stack(
        [
            frequencies * np.cos(directions),
            frequencies * np.sin(directions),
            rng.uniform(0, 2 * np.pi, 3),
            rng.uniform(-TEXTURE_DRIFT, TEXTURE_DRIFT, 3),
        ],
        axis=1,
    )
    count = int(rng.integers(2, 4))
    radius = np.sqrt(rng.uniform(0.0, 0.5, count))
    angle = rng.uniform(0, 2 * np.pi, count)
    turn = rng.uniform(-PUNCTA_TURN, PUNCTA_TURN, count)
    puncta = np.stack([radius * np.cos(angle), radius * np.sin(angle), turn], axis=1)
    return _Cell(
        track_id=track_id,
        parent_track_id=parent,
        start=start,
        semi_axes=(long_axis, short_axis),
        expression=expression,
        onset=onset,
        waves=waves,
        puncta=puncta,
        spot=rng.uniform(-1.0, 1.0, 2),
    )


def _reflect(value: float, low: float, high: float) -> float:
    if value < low:
        value = 2 * low - value
    elif value > high:
        value = 2 * high - value
    return float(np.clip(value, low, high))


def _simulate(
    rng: np.random.Generator, *, frames: int, size: int, cells: int, t_on: int, infected: bool
) -> list[_Cell]:
    """Random-walk cells of one field, some dividing once; roots are ``1..cells``."""
    margin = SEMI_AXES[0][1] + 1.0
    low, high = margin, size - 1 - margin
    first, last = max(2, frames // 4), min(frames - 3, (3 * frames) // 4)
    dividing = set()
    if first <= last:
        count = max(1, round(cells * DIVIDING_FRACTION))
        dividing = {int(c) for c in rng.choice(cells, size=count, replace=False)}
    centres: list[np.ndarray] = []
    for _ in range(cells):  # spread the cells out where there is room
        for _ in range(50):
            centre = rng.uniform(low, high, 2)
            if all(np.hypot(*(centre - other)) >= 2 * SEMI_AXES[0][0] for other in centres):
                break
        centres.append(centre)
    result = []
    next_id = cells + 1
    for number, centre in enumerate(centres):
        onset = t_on + int(rng.integers(-ONSET_JITTER, ONSET_JITTER + 1)) if infected else math.inf
        cell = _new_cell(rng, number + 1, -1, 0, onset, float(rng.uniform(*EXPRESSION)))
        end = int(rng.integers(first, last + 1)) if number in dividing else frames - 1
        _walk(cell, rng, centre, float(rng.uniform(0, np.pi)), end, low, high)
        result.append(cell)
        if end == frames - 1:
            continue
        along = np.array([np.sin(cell.angle[-1]), np.cos(cell.angle[-1])])
        offset = 0.5 * cell.semi_axes[0] * along
        for sign in (1.0, -1.0):
            expression = cell.expression * float(rng.uniform(0.9, 1.1))
            daughter = _new_cell(rng, next_id, cell.track_id, end + 1, onset, expression)
            start = np.array([cell.y[-1], cell.x[-1]]) + sign * offset
            start = np.array([_reflect(v, low, high) for v in start])
            _walk(daughter, rng, start, cell.angle[-1], frames - 1, low, high)
            result.append(daughter)
            next_id += 1
    return result


def _walk(
    cell: _Cell,
    rng: np.random.Generator,
    centre: np.ndarray,
    angle: float,
    end: int,
    low: float,
    high: float,
) -> None:
    """Fill the cell's positions from its start to ``end`` (inclusive)."""
    y, x = (float(v) for v in centre)
    velocity = np.zeros(2)
    for _ in range(cell.start, end + 1):
        cell.y.append(y)
        cell.x.append(x)
        cell.angle.append(angle)
        velocity = 0.7 * velocity + rng.normal(0.0, STEP, 2)
        y = _reflect(y + velocity[0], low, high)
        x = _reflect(x + velocity[1], low, high)
        angle += float(rng.normal(0.0, 0.1))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise low-passed by a Gaussian of ``sigma`` pixels (in Fourier space), std 1.

    Shapes:
        returns: ``shape`` float64.
    """
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    return smooth / smooth.std()


def _render(
    cells: list[_Cell],
    rng: np.random.Generator,
    style: _Style,
    *,
    frames: int,
    depth: int,
    size: int,
) -> np.ndarray:
    """The field image in common channel order.

    Shapes:
        returns: ``(frames, 2, depth, size, size)`` uint16 (phase, reporter).
    """
    planes = np.arange(depth) - depth // 2
    focus = np.exp(-(planes**2) / (2.0 * max(1.0, depth / 4) ** 2))[:, None, None]
    background = np.stack(
        [
            np.stack([_smooth_noise(rng, (size, size), style.texture_scale) for _ in range(depth)])
            * style.texture[channel]
            for channel in range(len(COMMON_CHANNELS))
        ]
    )  # (C, Z, Y, X), static: the dish and the optics
    image = np.empty((frames, len(COMMON_CHANNELS), depth, size, size), np.uint16)
    for t in range(frames):
        phase = np.zeros((size, size))
        reporter = np.zeros((size, size))
        for cell in cells:
            if t in cell.frames:
                _stamp(cell, t, phase, reporter)
        signal = np.stack([style.polarity * phase, reporter])[:, None] * focus[None]
        noise = rng.standard_normal(signal.shape) * style.noise[:, None, None, None]
        units = signal + background + noise + style.base[:, None, None, None]
        gain = style.gain[:, None, None, None] * COUNTS_PER_UNIT
        counts = style.offset[:, None, None, None] + gain * units
        image[t] = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
    return image


def _stamp(cell: _Cell, t: int, phase: np.ndarray, reporter: np.ndarray) -> None:
    """Draw the cell at frame ``t``: phase by maximum (bodies occlude), reporter by sum."""
    k = t - cell.start
    scale = 1.0  # a daughter starts small and grows back to its full size
    if cell.parent_track_id != -1:
        scale = DAUGHTER_SCALE + (1.0 - DAUGHTER_SCALE) * min(1.0, k / GROWTH_FRAMES)
    long_axis, short_axis = cell.semi_axes[0] * scale, cell.semi_axes[1] * scale
    cy, cx, angle = cell.y[k], cell.x[k], cell.angle[k]
    half = math.ceil(long_axis) + 3
    size = phase.shape[0]
    y0, y1 = max(0, int(cy) - half), min(size, int(cy) + half + 2)
    x0, x1 = max(0, int(cx) - half), min(size, int(cx) + half + 2)
    dy = np.arange(y0, y1)[:, None] - cy
    dx = np.arange(x0, x1)[None, :] - cx
    along = dx * math.cos(angle) + dy * math.sin(angle)  # the cell frame: long axis first
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    radius = np.sqrt((along / long_axis) ** 2 + (across / short_axis) ** 2)
    body = 1.0 / (1.0 + np.exp((radius - 1.0) * short_axis / 0.7))  # soft edge of ~0.7 px
    texture = sum(
        np.cos(wy * along + wx * across + shift + drift * k) for wy, wx, shift, drift in cell.waves
    ) / len(cell.waves)
    window = (slice(y0, y1), slice(x0, x1))
    phase[window] = np.maximum(phase[window], body * (1.0 + 0.3 * texture))

    relocated = RELOCATED * float(np.clip((t - cell.onset + 1) / RAMP_FRAMES, 0.0, 1.0))
    level = cell.expression
    signal = body * level * (1.0 - relocated) * (1.0 + 0.2 * texture)
    for u, v, turn in cell.puncta:  # vesicles circle around the centre
        pu = u * math.cos(turn * k) - v * math.sin(turn * k)
        pv = u * math.sin(turn * k) + v * math.cos(turn * k)
        distance2 = (along - pu * long_axis) ** 2 + (across - pv * short_axis) ** 2
        signal += PUNCTA_LEVEL * level * np.exp(-distance2 / (2 * PUNCTA_SIGMA**2))
    if relocated > 0:
        # the spot holds what left the cytoplasm: same total reporter per cell
        peak = relocated * level * long_axis * short_axis / (2 * SPOT_SIGMA**2)
        distance2 = (along - cell.spot[0]) ** 2 + (across - cell.spot[1]) ** 2
        signal += peak * np.exp(-distance2 / (2 * SPOT_SIGMA**2))
    reporter[window] += signal


def _table(cells: list[_Cell], z: int) -> pd.DataFrame:
    """Ultrack's layout: node ids in (track_id, t) order; ``parent_id`` is the previous node
    of the cell (for a daughter's first node its parent's last node, -1 for a root's)."""
    rows = []
    last_node: dict[int, int] = {}
    node = 1
    for cell in sorted(cells, key=lambda c: c.track_id):
        previous = last_node[cell.parent_track_id] if cell.parent_track_id != -1 else -1
        for k, t in enumerate(cell.frames):
            rows.append(
                (
                    cell.track_id,
                    t,
                    float(z),
                    cell.y[k],
                    cell.x[k],
                    node,
                    cell.parent_track_id,
                    previous,
                )
            )
            previous = node
            node += 1
        last_node[cell.track_id] = previous
    columns = ["track_id", "t", "z", "y", "x", "id", "parent_track_id", "parent_id"]
    return pd.DataFrame(rows, columns=columns)
