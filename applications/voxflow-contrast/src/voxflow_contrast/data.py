"""Training data: anchor/positive pairs of cell-centred crops, read in whole batches.

- ``PairDataset(index, experiments, *, z_window=1, crop=None, channels=None)``: a map-style
  dataset whose item is a whole batch ``(anchor_rows, positive_rows)`` (row positions into
  ``index.table``); it returns normalised ``(B, C, Z, Y, X)`` crops of both and the rows.
- ``PairBatchSampler(batch_sampler, lineage_arrays, *, tau, decay, seed, position=None)``:
  wraps the part-1 ``BatchSampler``; yields ``(anchor_rows, positive_rows)`` per batch with
  positives from ``draw_positives``, seeded by ``(seed, epoch, global batch number)``.
- ``ContrastDataModule``: the Lightning data module (train/validation split by experiment or
  by field of view). Train with ``Trainer(use_distributed_sampler=False)``.
- ``check_index_current(config, experiments, index)``: the index's stored fingerprint equals
  the one of the experiments as they are now.

Everything a crop needs is precomputed from the index when the dataset is made: the field,
the frame, the window corner (the border policy's convention: ``floor(y) - Y // 2``; the Z
window starts at ``floor(z) - z_window // 2``, clamped inside the stack), the normalisation
statistics and the plate channel of each common channel. Training reads voxels only: each
field's volume is opened once per process, on its first crop there (a DataLoader worker
opens its own; voxflow-io volumes also reopen their handles after a fork).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from voxflow_io import Volume
from voxflow_utils import loader_start_method

from . import cache
from .errors import CellIndexError, DataError, SamplerError
from .experiments import Experiment, ExperimentsConfig, FieldOfView, register_experiments
from .index import CellIndex
from .positives import LineageArrays, draw_positives, tau_probabilities
from .sampler import BatchSampler, SamplerConfig

logger = logging.getLogger(__name__)

Batch = tuple[np.ndarray, np.ndarray]
"""``(anchor_rows, positive_rows)``: two ``(B,)`` int64 arrays of row positions."""
Split = Literal["experiment", "fov"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"{name} must be an integer >= 1, found {value!r}")
    return int(value)


class PairDataset(Dataset[dict[str, torch.Tensor]]):
    """Normalised cell-centred crops of anchor and positive rows, a whole batch per item.

    ``dataset[(anchor_rows, positive_rows)]`` reads, for every row, the window of
    ``z_window`` slices x ``crop`` pixels centred on the row's ``(z, y, x)`` at its frame
    ``t``, the channels in ``channels`` order, as ``(pixels - norm_mean_<c>) /
    norm_std_<c>`` with the row's statistics from the index.

    Args:
        index: The cell index (``build_index`` or ``CellIndex.load``).
        experiments: The registered experiments (``register_experiments``) the index was
            built from: every field of the index must be one of theirs.
        z_window: Slices per crop (>= 1, at most the fields' Z).
        crop: ``(Y, X)`` pixels; default ``index.options["patch_size"]`` (the border policy
            kept those windows inside the images).
        channels: Common channels to read, in output order; default ``index.channels``.

    Shapes:
        returns ``anchor``, ``positive``: ``(B, C, Z, Y, X)`` float32; ``anchor_row``,
        ``positive_row``, ``tau`` (``t[positive] - t[anchor]``): ``(B,)`` int64.

    Raises:
        CellIndexError: the index names a field no experiment has, a channel an experiment
            does not map, a missing column, or statistics that are not finite and positive.
        DataError: a bad option, or a row whose window leaves its field image (naming the
            field, the row and the window).
    """

    def __init__(
        self,
        index: CellIndex,
        experiments: Sequence[Experiment],
        *,
        z_window: int = 1,
        crop: tuple[int, int] | None = None,
        channels: Sequence[str] | None = None,
    ) -> None:
        table = index.table
        self.z_window = _positive_int(z_window, "z_window")
        given = tuple(index.options["patch_size"]) if crop is None else crop
        if not isinstance(given, tuple | list) or len(given) != 2:
            raise DataError(f"crop must be (Y, X) pixels, found {crop!r}")
        self.crop = (_positive_int(given[0], "crop[0]"), _positive_int(given[1], "crop[1]"))
        self.channels = self._channels(index, channels)
        missing = [
            c
            for c in (
                *("experiment", "well", "fov", "fov_id", "t", "z", "y", "x"),
                *(f"norm_{s}_{ch}" for ch in self.channels for s in ("mean", "std")),
            )
            if c not in table.columns
        ]
        if missing:
            raise CellIndexError(f"{index.path}: cell index lacks column(s) {missing}")
        self.n_rows = len(table)
        if isinstance(experiments, Experiment) or not all(
            isinstance(e, Experiment) for e in experiments
        ):
            raise DataError(
                f"experiments must be the list register_experiments returns, found "
                f"{type(experiments).__name__}"
            )
        self._experiments = {e.spec.name: e for e in experiments}
        self.fields = self._fields(index, experiments)
        fov_id = table["fov_id"].to_numpy(np.int64)
        self._field = fov_id
        self._t = table["t"].to_numpy(np.int64)
        self._start = self._starts(index, fov_id)
        self._mean, self._std = self._statistics(index)
        self._plate_channels = [self._channel_map(f) for f in self.fields]
        self._volumes: dict[int, Volume] = {}
        self._pid = os.getpid()
        logger.debug(
            "PairDataset: %d rows, %d fields, crop (C, Z, Y, X) = (%d, %d, %d, %d)",
            self.n_rows,
            len(self.fields),
            len(self.channels),
            self.z_window,
            *self.crop,
        )

    # -- construction --------------------------------------------------------------------
    @staticmethod
    def _channels(index: CellIndex, channels: Sequence[str] | None) -> tuple[str, ...]:
        if channels is None:
            return tuple(index.channels)
        if isinstance(channels, str) or not len(channels):
            raise DataError(f"channels must be a non-empty list of names, found {channels!r}")
        unknown = [c for c in channels if c not in index.channels]
        if unknown or len(set(channels)) != len(channels):
            raise DataError(
                f"channels {list(channels)} must be distinct channels of the index "
                f"{list(index.channels)}" + (f"; unknown: {unknown}" if unknown else "")
            )
        return tuple(channels)

    @staticmethod
    def _fields(index: CellIndex, experiments: Sequence[Experiment]) -> list[FieldOfView]:
        """The registered field of each ``fov_id`` of the index."""
        registered = {f.key: f for e in experiments for f in e.fields}
        keys, _ = field_keys(index)
        absent = [key for key in keys if key not in registered]
        if absent:
            raise CellIndexError(
                f"{index.path}: the cell index names field(s) {absent[:5]} ({len(absent)} in "
                f"all) that the experiments do not register; registered fields: "
                f"{sorted(registered)[:10]}: the index was built from other experiments"
            )
        return [registered[key] for key in keys]

    def _channel_map(self, field: FieldOfView) -> tuple[int, int, np.ndarray | None]:
        """``(first plate channel, channels to read, selection or None)`` of a field."""
        experiment = self._experiments[field.experiment]
        by_common = {common: plate for plate, common in experiment.spec.channels.items()}
        unmapped = [c for c in self.channels if c not in by_common]
        if unmapped:
            raise CellIndexError(
                f"experiment {field.experiment!r} maps no plate channel onto {unmapped} "
                f"(its channels: {experiment.spec.channels}); the index's channels are "
                f"{list(self.channels)}"
            )
        names = list(field.position.channel_names)
        indices = np.array([names.index(by_common[c]) for c in self.channels], np.int64)
        first = int(indices.min())
        span = int(indices.max()) - first + 1
        selection = indices - first
        if np.array_equal(selection, np.arange(span)):
            return first, span, None
        return first, span, selection

    def _starts(self, index: CellIndex, fov_id: np.ndarray) -> np.ndarray:
        """``(N, 3)`` window corners ``(z, y, x)``; every window inside its field image."""
        table = index.table
        shapes = np.array([f.shape for f in self.fields], np.int64)[fov_id]  # (N, 5)
        depth, height, width = shapes[:, 2], shapes[:, 3], shapes[:, 4]
        too_deep = np.flatnonzero(depth < self.z_window)
        if len(too_deep):
            field = self.fields[fov_id[too_deep[0]]]
            raise DataError(
                f"{field.position.plate}/{field.position.key}: z_window={self.z_window} is "
                f"larger than the field's {int(depth[too_deep[0]])} slices"
            )
        z = np.floor(table["z"].to_numpy(np.float64)).astype(np.int64) - self.z_window // 2
        z = np.clip(z, 0, depth - self.z_window)
        crop_y, crop_x = self.crop
        y = np.floor(table["y"].to_numpy(np.float64)).astype(np.int64) - crop_y // 2
        x = np.floor(table["x"].to_numpy(np.float64)).astype(np.int64) - crop_x // 2
        t = self._t
        outside = (y < 0) | (y + crop_y > height) | (x < 0) | (x + crop_x > width)
        outside |= (t < 0) | (t >= shapes[:, 0])
        if outside.any():
            rows = np.flatnonzero(outside)
            row = int(rows[0])
            field = self.fields[fov_id[row]]
            raise DataError(
                f"{field.position.plate}/{field.position.key}: the crop of row {row} (t "
                f"{int(t[row])}, centre y {float(table['y'].iat[row]):.2f}, x "
                f"{float(table['x'].iat[row]):.2f}) "
                f"starts at (y, x) = ({int(y[row])}, {int(x[row])}) with size {self.crop} and "
                f"leaves the image of (T, Y, X) = ({int(shapes[row, 0])}, {int(height[row])}, "
                f"{int(width[row])}); {len(rows)} row(s) do so (use a crop no larger than the "
                f"index's patch_size {tuple(index.options['patch_size'])})"
            )
        return np.stack([z, y, x], axis=1)

    def _statistics(self, index: CellIndex) -> tuple[np.ndarray, np.ndarray]:
        """``(N, C)`` float32 means and standard deviations, checked finite (std > 0)."""
        table = index.table
        mean = np.stack([table[f"norm_mean_{c}"].to_numpy(np.float32) for c in self.channels], 1)
        std = np.stack([table[f"norm_std_{c}"].to_numpy(np.float32) for c in self.channels], 1)
        for name, values, bad in (
            ("norm_mean", mean, ~np.isfinite(mean)),
            ("norm_std", std, ~(np.isfinite(std) & (std > 0))),
        ):
            if bad.any():
                row, column = (int(v[0]) for v in np.nonzero(bad))
                raise CellIndexError(
                    f"{index.path}: column {name}_{self.channels[column]} holds "
                    f"{values[row, column]} at row {row}; expected a finite value"
                    + (" > 0" if name == "norm_std" else "")
                )
        return mean, std

    # -- reading -------------------------------------------------------------------------
    def _volume(self, field: int) -> Volume:
        """The field's image, opened once per process."""
        if self._pid != os.getpid():
            self._volumes, self._pid = {}, os.getpid()
        volume = self._volumes.get(field)
        if volume is None:
            info = self.fields[field]
            volume = info.position.open()
            if tuple(volume.shape) != info.shape:
                raise DataError(
                    f"{info.position.plate}/{info.position.key}: the field image has shape "
                    f"{volume.shape} now, {info.shape} when the experiments were registered"
                )
            self._volumes[field] = volume
        return volume

    def rows(self, value: object, name: str = "rows") -> np.ndarray:
        """``value`` checked as a non-empty 1-D array of row positions, as int64."""
        array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
            raise DataError(
                f"{name} must be a non-empty 1-D array of integer row positions, found a "
                f"{array.dtype} array of shape {array.shape}"
            )
        array = array.astype(np.int64, copy=False)
        outside = np.flatnonzero((array < 0) | (array >= self.n_rows))
        if len(outside):
            raise DataError(
                f"{name}: row {int(array[outside[0]])} is not a row position of the cell index "
                f"(expected 0 <= row < {self.n_rows}); {len(outside)} such row(s)"
            )
        return array

    def crops(self, rows: object) -> torch.Tensor:
        """The normalised crops of ``rows`` (checked by ``rows``).

        Shapes:
            rows: ``(B,)`` int -> ``(B, C, Z, Y, X)`` float32.
        """
        rows = self.rows(rows)
        out = np.empty((len(rows), len(self.channels), self.z_window, *self.crop), np.float32)
        size_z, (size_y, size_x) = self.z_window, self.crop
        for number, row in enumerate(rows.tolist()):
            field = int(self._field[row])
            first, span, selection = self._plate_channels[field]
            z, y, x = self._start[row].tolist()
            window = self._volume(field).read(
                (int(self._t[row]), first, z, y, x), (1, span, size_z, size_y, size_x)
            )[0]
            out[number] = window if selection is None else window[selection]
        out -= self._mean[rows][:, :, None, None, None]
        out /= self._std[rows][:, :, None, None, None]
        return torch.from_numpy(out)

    def __getitem__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise DataError(
                f"a PairDataset item is a batch (anchor_rows, positive_rows), found "
                f"{type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, tuple | list) else "")
            )
        anchors = self.rows(batch[0], "anchor_rows")
        positives = self.rows(batch[1], "positive_rows")
        if len(anchors) != len(positives):
            raise DataError(
                f"anchor_rows and positive_rows must have the same length, found "
                f"{len(anchors)} and {len(positives)}"
            )
        both = self.crops(np.concatenate([anchors, positives]))
        return {
            "anchor": both[: len(anchors)],
            "positive": both[len(anchors) :],
            "anchor_row": torch.from_numpy(anchors.copy()),
            "positive_row": torch.from_numpy(positives.copy()),
            "tau": torch.from_numpy(self._t[positives] - self._t[anchors]),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_volumes"] = {}  # each process opens its own
        return state


class PairBatchSampler:
    """Batches of ``(anchor_rows, positive_rows)``: the ``BatchSampler``'s anchors with one
    positive each from ``draw_positives``.

    The positives of global batch ``g`` of epoch ``e`` (rank ``r`` takes ``g = k *
    num_replicas + r`` for its ``k``-th batch) come from
    ``numpy.random.default_rng((seed, e, g))``: the same seed, epoch and batch give the same
    pairs, on any number of workers.

    Without ``position`` an iteration yields the ``len(self)`` batches of the epoch last set
    by ``set_epoch`` (Lightning calls it before every epoch: ``dataloader.sampler``, as
    ``DataLoader(dataset, sampler=pairs, batch_size=None)``; ``.sampler`` gives the wrapped
    ``BatchSampler`` for ``dataloader.batch_sampler.sampler``). With ``position`` (as
    voxflow-segment's ``ResumableBatchSampler``) the stream follows the number of batches
    already trained: every ``iter()`` starts at global batch number ``position()`` (epoch
    ``position() // len(self)``, batch ``position() % len(self)``) and yields ``len(self)``
    batches, so a run resumed from a mid-epoch checkpoint continues the exact sequence
    whatever Lightning counts as an epoch; ``set_epoch`` is then passed on but does not choose
    the batches.

    Args:
        batch_sampler: The anchors (``BatchSampler``, one per rank).
        lineage_arrays: ``LineageArrays.from_table`` of the same table.
        tau: ``(tau_min, tau_max)`` frames, as the index's ``tau``.
        decay: Rate of ``p(tau) ∝ exp(-decay * |tau|)`` (``SamplerConfig.decay``).
        seed: Integer >= 0.
        position: Batches trained so far (e.g. ``global_step * accumulate_grad_batches``).

    Shapes:
        yields ``(anchor_rows, positive_rows)``: two ``(batch_size,)`` int64 arrays of row
        positions into the index table.

    Raises:
        SamplerError: a bad argument (named); while iterating, as ``draw_positives``.
    """

    def __init__(
        self,
        batch_sampler: BatchSampler,
        lineage_arrays: LineageArrays,
        *,
        tau: tuple[int, int],
        decay: float,
        seed: int,
        position: Callable[[], int] | None = None,
    ) -> None:
        if not isinstance(batch_sampler, BatchSampler):
            raise SamplerError(
                f"batch_sampler must be a voxflow_contrast BatchSampler, found "
                f"{type(batch_sampler).__name__}"
            )
        if not isinstance(lineage_arrays, LineageArrays):
            raise SamplerError(
                f"lineage_arrays must be LineageArrays.from_table(index), found "
                f"{type(lineage_arrays).__name__}"
            )
        if not isinstance(tau, tuple | list) or len(tau) != 2:
            raise SamplerError(f"tau must be (tau_min, tau_max) frames, found {tau!r}")
        tau_probabilities(tau[0], tau[1], decay)  # checks the range and the decay
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise SamplerError(f"seed must be an integer >= 0, found {seed!r}")
        if position is not None and not callable(position):
            raise SamplerError(f"position must be a callable or None, found {position!r}")
        self.batch_sampler = batch_sampler
        self.lineage_arrays = lineage_arrays
        self.tau = (int(tau[0]), int(tau[1]))
        self.decay = float(decay)
        self.seed = int(seed)
        self.position = position
        self.epoch = 0
        self.fallbacks = 0
        """Positives that used the nearest available tau instead of the drawn one, so far."""

    @property
    def sampler(self) -> BatchSampler:
        """The wrapped ``BatchSampler`` (``dataloader.batch_sampler.sampler`` for Lightning)."""
        return self.batch_sampler

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (without ``position``); passed on."""
        self.batch_sampler.set_epoch(epoch)
        self.epoch = self.batch_sampler.epoch

    def __len__(self) -> int:
        """Batches per iteration: the wrapped sampler's batches per rank and epoch."""
        return len(self.batch_sampler)

    def _start(self) -> int:
        if self.position is None:
            return self.epoch * len(self)
        start = self.position()
        if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
            raise SamplerError(f"position() must return an integer >= 0, found {start!r}")
        if start % len(self):
            logger.info(
                "continuing at batch %d (epoch %d, batch %d of the stream)",
                start,
                start // len(self),
                start % len(self),
            )
        return int(start)

    def pair(self, number: int) -> Batch:
        """The pairs of this rank's batch ``number`` of the stream (epoch ``number //
        len(self)``, batch ``number % len(self)``)."""
        epoch, batch = divmod(number, len(self))
        sampler = self.batch_sampler
        sampler.set_epoch(epoch)
        anchors = sampler.batches()[batch].copy()
        rng = np.random.default_rng((self.seed, epoch, batch * sampler.num_replicas + sampler.rank))
        positives, _, fallbacks = draw_positives(
            self.lineage_arrays, anchors, self.tau[0], self.tau[1], self.decay, rng
        )
        if fallbacks:
            self.fallbacks += fallbacks
            logger.debug("batch %d: %d positive(s) at the nearest available tau", number, fallbacks)
        return anchors, positives

    def __iter__(self) -> Iterator[Batch]:
        start = self._start()
        for number in range(start, start + len(self)):
            yield self.pair(number)


def check_index_current(
    config: ExperimentsConfig, experiments: Sequence[Experiment], index: CellIndex
) -> None:
    """Check that ``index`` was built from ``config``'s experiments as they are now.

    Compares the fingerprint stored with the index (``index.path``) with the one of the
    experiments now (settings, common channels, each plate's metadata with its channel names,
    each tracking table's bytes), without reading a voxel.

    Raises:
        CellIndexError: the common channels differ from the index's, or an input changed,
            appeared or disappeared (each named; rebuild the index with ``build_index``).
    """
    if tuple(config.channels) != tuple(index.channels):
        raise CellIndexError(
            f"{index.path}: the index has channels {list(index.channels)}, the experiments "
            f"file {list(config.channels)}; rebuild the index"
        )
    stored = cache.stored_metadata(index.path)["fingerprint"]
    current = cache.fingerprint(config, list(experiments), index.options)
    if stored != current:
        raise CellIndexError(
            f"{index.path}: the cell index does not describe the experiments as they are now "
            f"({cache.differences(stored, current)}); rebuild it (voxflow-contrast "
            f"build-index)"
        )


class ContrastDataModule(pl.LightningDataModule):
    """Training and validation loaders of anchor/positive crops.

    Validation holds out whole experiments (``val_split="experiment"``: ``val_keys`` are
    experiment names) or whole fields of view (``"fov"``: ``val_keys`` are
    ``"experiment/row/column/fov"`` keys, e.g. ``"exp1/A/1/0"``); or, with ``val_fraction``
    instead of ``val_keys``, ``max(1, round(val_fraction * n))`` of the ``n`` experiments or
    fields, the first of ``numpy.random.default_rng((sampler.seed, 1)).permutation(n)`` over
    them in index order. Lineages never cross fields, so no positive leaves its split.

    Training batches: ``BatchSampler.from_config`` over the training anchors (this rank's
    share: ``num_replicas=trainer.world_size, rank=trainer.global_rank``) with positives from
    ``PairBatchSampler`` following ``trainer.global_step * accumulate_grad_batches`` (exact
    resume). Validation batches: the same grouping and stratification over the validation
    anchors, without leak, temporal window or replacement, epoch 0 always, so every validation
    sees the same pairs. Loaders: ``DataLoader(dataset, sampler=pairs, batch_size=None)``.

    The Trainer must have ``use_distributed_sampler=False``: the sampler shards the batches
    across ranks itself, and Lightning would otherwise try to rebuild the loader around a
    ``DistributedSampler``.

    Args:
        experiments: The experiments file (``load_experiments``).
        index: The cell index built from it (``build_index``).
        sampler: Batch composition, seed and positives' decay.
        val_split: ``"experiment"`` or ``"fov"``.
        val_keys: Experiments or fields held out for validation.
        val_fraction: In (0, 1): the share held out, chosen by ``sampler.seed``; exactly one
            of ``val_keys`` and ``val_fraction``.
        val_batch_size: Validation batch size per rank (default ``sampler.batch_size``).
        z_window: Slices per crop.
        crop: ``(Y, X)`` pixels per crop (default ``index.options["patch_size"]``).
        num_workers: DataLoader worker processes (persistent).
        pin_memory: Pin batches (for a CUDA device).

    Raises:
        DataError: a bad split (unknown keys, nothing left to train on, a split without
            anchors) or option.
    """

    def __init__(
        self,
        experiments: ExperimentsConfig,
        index: CellIndex,
        sampler: SamplerConfig,
        *,
        val_split: Split,
        val_keys: Sequence[str] | None = None,
        val_fraction: float | None = None,
        val_batch_size: int | None = None,
        z_window: int = 1,
        crop: tuple[int, int] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(sampler, SamplerConfig):
            raise DataError(f"sampler must be a SamplerConfig, found {type(sampler).__name__}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise DataError(f"num_workers must be an integer >= 0, found {num_workers!r}")
        self.config = experiments
        self.index = index
        self.sampler_config = sampler
        self.val_batch_size = _positive_int(
            sampler.batch_size if val_batch_size is None else val_batch_size, "val_batch_size"
        )
        self.z_window, self.crop = z_window, crop
        self.num_workers, self.pin_memory = num_workers, bool(pin_memory)
        if val_split not in ("experiment", "fov"):
            raise DataError(f"val_split must be 'experiment' or 'fov', found {val_split!r}")
        self.val_split = val_split
        if val_split == "fov":
            names, unit = field_keys(index)  # unit: the field of each row
        else:
            column = index.table["experiment"]
            unit = column.cat.codes.to_numpy(np.int64)
            names = [str(c) for c in column.cat.categories]
        present = np.unique(unit)
        self.val_keys = _held_out(
            [names[u] for u in present.tolist()], val_split, val_keys, val_fraction, sampler.seed
        )
        held = np.isin(np.array(names, dtype=object), self.val_keys)[unit]
        anchor = index.table["anchor"].to_numpy(bool)
        for name, rows in (("training", anchor & ~held), ("validation", anchor & held)):
            if not rows.any():
                raise DataError(
                    f"val_split={val_split!r} with validation {self.val_keys} leaves no valid "
                    f"anchor for {name}"
                )
        self.train_anchor, self.val_anchor = anchor & ~held, anchor & held
        self.dataset: PairDataset | None = None
        self.lineage: LineageArrays | None = None
        self._val_batches: dict[tuple[int, int], list[Batch]] = {}
        logger.info(
            "split by %s: validation %s (%d anchors), training %d anchors",
            val_split,
            self.val_keys,
            int(self.val_anchor.sum()),
            int(self.train_anchor.sum()),
        )

    def setup(self, stage: str | None = None) -> None:
        """Register the experiments, check the index against them, make the dataset."""
        if self.dataset is not None:
            return
        experiments = register_experiments(self.config)
        check_index_current(self.config, experiments, self.index)
        self.dataset = PairDataset(self.index, experiments, z_window=self.z_window, crop=self.crop)
        self.lineage = LineageArrays.from_table(self.index)

    def _ready(self) -> tuple[PairDataset, LineageArrays]:
        if self.dataset is None or self.lineage is None:
            raise DataError("ContrastDataModule.setup() has not run")
        return self.dataset, self.lineage

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def _loader(self, pairs: Any) -> DataLoader[dict[str, torch.Tensor]]:
        dataset, _ = self._ready()
        workers = self.num_workers
        return DataLoader(
            dataset,
            sampler=pairs,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            # not fork: the plates were read here through tensorstore, whose threads a fork
            # would break
            multiprocessing_context=loader_start_method() if workers else None,
        )

    def train_sampler(self, position: Callable[[], int] | None = None) -> PairBatchSampler:
        """This rank's training pairs (``position``: batches trained so far)."""
        _, lineage = self._ready()
        rank, replicas = self._ranks()
        anchors = BatchSampler.from_config(
            self._anchors(self.train_anchor),
            self.sampler_config,
            num_replicas=replicas,
            rank=rank,
        )
        config = self.sampler_config
        return PairBatchSampler(
            anchors,
            lineage,
            tau=self.index.tau,
            decay=config.decay,
            seed=config.seed,
            position=position,
        )

    def _anchors(self, anchor: np.ndarray) -> pd.DataFrame:
        """The columns the batch sampler reads, with ``anchor`` restricted to one split."""
        config = self.sampler_config
        table = self.index.table
        for option in ("group_by", "stratify_by"):
            column = getattr(config, option)
            if column is not None and column not in table.columns:
                raise SamplerError(
                    f"sampler.{option}={column!r} is not a column of the cell index; columns: "
                    f"{list(table.columns)}"
                )
        names = {"t", *(c for c in (config.group_by, config.stratify_by) if c is not None)}
        return pd.DataFrame({**{c: table[c] for c in names}, "anchor": anchor})

    def val_batches(self) -> list[Batch]:
        """This rank's validation pairs: the same on every call."""
        _, lineage = self._ready()
        rank, replicas = self._ranks()
        if (rank, replicas) not in self._val_batches:
            config = self.sampler_config.model_copy(
                update={
                    "batch_size": self.val_batch_size,
                    "batches_per_epoch": None,
                    "leaky": 0.0,
                    "temporal_window": None,
                    "temporal_fraction": None,
                    "replacement": False,
                }
            )
            try:
                anchors = BatchSampler.from_config(
                    self._anchors(self.val_anchor),
                    config,
                    num_replicas=replicas,
                    rank=rank,
                )
            except SamplerError as exc:
                raise SamplerError(
                    f"validation batches ({int(self.val_anchor.sum())} anchors in "
                    f"{self.val_keys}): {exc}"
                ) from exc
            pairs = PairBatchSampler(
                anchors, lineage, tau=self.index.tau, decay=config.decay, seed=config.seed
            )
            self._val_batches[(rank, replicas)] = list(pairs)
        return self._val_batches[(rank, replicas)]

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        trainer = self.trainer
        position: Callable[[], int] | None = None
        if trainer is not None:

            def position() -> int:
                return trainer.global_step * trainer.accumulate_grad_batches

        return self._loader(self.train_sampler(position))

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return self._loader(self.val_batches())


def field_keys(index: CellIndex) -> tuple[list[str], np.ndarray]:
    """The ``"experiment/row/column/fov"`` key of each ``fov_id`` and the ``fov_id`` of each
    row.

    Shapes:
        returns ``(F,)`` keys, ``(N,)`` int64.

    Raises:
        CellIndexError: ``fov_id`` does not number the fields ``0..F-1``, or rows of one
            ``fov_id`` name different fields.
    """
    table = index.table
    fov_id = table["fov_id"].to_numpy(np.int64)
    ids, first = np.unique(fov_id, return_index=True)
    if len(ids) == 0 or ids[0] != 0 or ids[-1] != len(ids) - 1:
        raise CellIndexError(
            f"{index.path}: fov_id must number the fields 0..F-1, found {ids[:10].tolist()}"
        )
    columns = ("experiment", "well", "fov")
    codes = np.stack([table[c].cat.codes.to_numpy(np.int64) for c in columns])
    differ = np.flatnonzero((codes != codes[:, first][:, fov_id]).any(axis=0))
    if len(differ):
        raise CellIndexError(
            f"{index.path}: rows of fov_id {fov_id[differ[0]]} name different fields (e.g. "
            f"row {differ[0]})"
        )
    keys = ["/".join(str(table[c].iat[row]) for c in columns) for row in first.tolist()]
    return keys, fov_id


def _held_out(
    units: list[str], split: str, val_keys: Sequence[str] | None, fraction: object, seed: int
) -> list[str]:
    """The experiments or field keys (``units``, in index order) held out for validation."""
    what = "experiments" if split == "experiment" else "fields ('experiment/row/column/fov')"
    if (val_keys is None) == (fraction is None):
        raise DataError(
            f"give exactly one of val_keys and val_fraction, found val_keys={val_keys!r}, "
            f"val_fraction={fraction!r}"
        )
    if val_keys is not None:
        if isinstance(val_keys, str) or not len(val_keys):
            raise DataError(f"val_keys must be a non-empty list of {what}, found {val_keys!r}")
        unknown = [k for k in val_keys if k not in units]
        if unknown or len(set(val_keys)) != len(val_keys):
            raise DataError(
                f"val_keys {list(val_keys)} must be distinct {what} of the index"
                + (f"; unknown: {unknown}" if unknown else "")
                + f"; the index has {units[:20]}"
            )
        chosen = list(val_keys)
    else:
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction < 1
        ):
            raise DataError(f"val_fraction must be a number in (0, 1), found {fraction!r}")
        count = max(1, round(fraction * len(units)))
        order = np.random.default_rng((seed, 1)).permutation(len(units))
        chosen = [units[i] for i in sorted(order[:count].tolist())]
    if len(chosen) >= len(units):
        raise DataError(
            f"val_split={split!r} holds out {chosen}: every one of the index's {what} "
            f"{units}; nothing is left to train on"
        )
    return chosen
