"""A composable, DDP-sharded batch sampler over the valid anchors of a cell index.

Each batch of ``batch_size`` anchor rows is composed from options that all combine:

- ``group_by`` (e.g. ``"experiment"``): a batch is drawn from one group, the groups taking
  batches in proportion to their anchors, except ``leak = round(batch_size * leaky)`` anchors
  drawn from the other groups (in proportion to their anchors);
- ``temporal_window=(t0, t1)`` with ``temporal_fraction``: of each part (the group's and the
  leak), ``round(part * temporal_fraction)`` anchors have ``t0 <= t <= t1``, the rest lie
  outside the window;
- ``stratify_by`` (e.g. ``"condition"``): within each of those pools, equal shares per stratum
  value present in the pool (or ``stratify_fractions``, renormalised over the strata present).

Rounding is half up (``round(x) = floor(x + 0.5)``). A part of ``n`` anchors split over
shares that do not divide it exactly is split so that over the epoch every share gets its
largest-remainder total and every batch is within about one anchor of its share (the
remainders rotate over the batches instead of always favouring the same stratum).

Epochs. Every composition is planned once, at construction, as ``batches`` templates (how many
anchors each batch takes from each pool cell ``(group, window, stratum)``). An epoch draws from
``numpy.random.default_rng((seed, epoch))``: a random order of the templates and, per cell, a
random sequence of its anchors that the batches consume in order; the anchors of a batch are
then shuffled. With ``replacement=False`` each cell's sequence is a permutation without repeats,
so an anchor appears at most once per epoch over all ranks; the default epoch is as long as
the anchors allow under the composition: batches are counted up until the first cell would run
out (a rare cell that every batch must sample makes epochs short: then prefer
``replacement=True`` with ``batches_per_epoch``). With ``replacement=True`` a cell's
sequence is a series of fresh permutations, so every anchor of a cell is used before any
repeats; the default epoch is ``n_anchors // batch_size`` batches.

DDP. Every rank computes the same global sequence of batches and takes batches ``rank,
rank + num_replicas, ...``: the same number of batches of the same size on every rank, and no
anchor on two ranks in an epoch when ``replacement=False`` (with ``drop_last=True``; with
``drop_last=False`` the sequence is padded to a multiple of ``num_replicas`` by repeating its
first batches, as PyTorch's ``DistributedSampler`` pads).

PyTorch and Lightning. Pass the sampler as ``DataLoader(dataset, batch_sampler=sampler)``; it
yields ``list[int]`` row positions (``iloc``) into the index table. Lightning calls
``set_epoch`` on ``dataloader.sampler`` and on ``dataloader.batch_sampler.sampler``
(``lightning.fabric.utilities.data._set_sampler_epoch``), never on the batch sampler itself:
``BatchSampler.sampler`` is the sampler itself, so Lightning reaches ``set_epoch``. Under DDP
build one sampler per rank (``num_replicas=trainer.world_size, rank=trainer.global_rank``) and
set ``Trainer(use_distributed_sampler=False)``: otherwise Lightning tries to re-create the
batch sampler around a ``DistributedSampler``, which this sampler does not take.

Configuration. ``SamplerConfig`` holds every option (and ``decay``, the rate of the positives'
tau distribution, which ``draw_positives`` takes) as a pydantic model for a ``sampler:``
section of a configuration file: it checks types and ranges, naming the key;
``BatchSampler.from_config(index, config, num_replicas=..., rank=...)`` builds the sampler,
which checks the options against each other and against the index.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from .errors import SamplerError
from .positives import _table

logger = logging.getLogger(__name__)

# A pool cell of one batch: anchors per batch, and per stratum its weight and the segments
# (group, window, stratum) it draws from with their weights.
_Node = tuple[int, list[tuple[float, list[tuple[float, int]]]]]


Count = Annotated[int, Field(strict=True, ge=1)]
NonNegative = Annotated[int, Field(strict=True, ge=0)]
Share = Annotated[float, Field(strict=True, ge=0, le=1)]
Column = Annotated[str, Field(min_length=1)]


class SamplerConfig(BaseModel):
    """Every option of ``BatchSampler`` (see it for their meaning) and the positives' ``decay``.

    Types and ranges are checked here (an error names the key); how the options combine
    and whether the index can satisfy them is checked by ``BatchSampler.from_config``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: Count = Field(description="Anchors per batch and rank.")
    batches_per_epoch: Count | None = Field(
        default=None,
        description="Global batches per epoch, split across ranks (default: as many as the "
        "anchors allow without repeats, or n_anchors // batch_size with replacement).",
    )
    group_by: Column | None = Field(
        default=None,
        description="Index column shared by every anchor of a batch, e.g. 'experiment'.",
    )
    leaky: Share = Field(
        default=0.0, description="Fraction of each batch drawn from the other groups, in [0, 1]."
    )
    stratify_by: Column | None = Field(
        default=None,
        description="Index column whose values get equal shares in a batch, e.g. 'condition'.",
    )
    stratify_fractions: dict[str | int, Share] | None = Field(
        default=None,
        description="Share of each value of stratify_by (every value named, summing to 1) "
        "instead of equal shares.",
    )
    temporal_window: tuple[NonNegative, NonNegative] | None = Field(
        default=None, description="[t0, t1] frames (inclusive): the focal time window."
    )
    temporal_fraction: Share | None = Field(
        default=None,
        description="Fraction of each batch with t in temporal_window, in [0, 1] (the rest "
        "comes from outside it).",
    )
    replacement: bool = Field(
        default=False, strict=True, description="Whether an anchor may repeat within an epoch."
    )
    seed: NonNegative = Field(default=0, description="With the epoch, fixes every draw.")
    drop_last: bool = Field(
        default=True,
        strict=True,
        description="Drop the batches that do not divide evenly over the ranks (else pad with "
        "the epoch's first batches).",
    )
    decay: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] = Field(
        default=0.0,
        description="Rate of p(tau) ∝ exp(-decay * |tau|) for the positives (0: uniform over "
        "the index's tau range).",
    )


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _integer(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SamplerError(f"{name} must be an integer >= {minimum}, found {value!r}")
    if value < minimum:
        raise SamplerError(f"{name} must be an integer >= {minimum}, found {value}")
    return int(value)


def _fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SamplerError(f"{name} must be a fraction in [0, 1], found {value!r}")
    fraction = float(value)
    if not 0.0 <= fraction <= 1.0:  # also refuses NaN
        raise SamplerError(f"{name} must be a fraction in [0, 1], found {value!r}")
    return fraction


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise SamplerError(f"{name} must be True or False, found {value!r}")
    return value


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (Hamilton's method).

    Each part is the floor or the ceiling of its quota; the parts sum to ``total``; ties go
    to the earlier weight.

    Shapes:
        weights: ``(L,)`` >= 0, not all 0 -> ``(L,)`` int64.
    """
    weights = np.asarray(weights, dtype=np.float64)
    quota = total * weights / weights.sum()
    parts = np.floor(quota).astype(np.int64)
    rest = total - int(parts.sum())
    if rest > 0:
        parts[np.argsort(parts - quota, kind="stable")[:rest]] += 1
    return parts


def _split(per_batch: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split each batch's count over weighted labels, balanced over the batches.

    The labels' epoch totals are ``largest_remainder(sum(per_batch), weights)``; the items of
    each label are spread evenly over one stream (label ``i``'s ``j``-th item at position
    ``(j + 0.5) / total_i``), and batch ``k`` takes the next ``per_batch[k]`` items of it.

    Shapes:
        per_batch: ``(K,)`` int64; weights: ``(L,)`` -> ``(K, L)`` int64, rows summing to
        ``per_batch``.
    """
    if len(weights) == 1:
        return per_batch[:, None].astype(np.int64)
    totals = largest_remainder(int(per_batch.sum()), weights)
    labels = np.repeat(np.arange(len(weights)), totals)
    within = np.arange(len(labels)) - np.repeat(np.cumsum(totals) - totals, totals)
    stream = labels[np.argsort((within + 0.5) / totals[labels], kind="stable")]
    batch = np.repeat(np.arange(len(per_batch)), per_batch)
    counts = np.bincount(batch * len(weights) + stream, minlength=len(per_batch) * len(weights))
    return counts.reshape(len(per_batch), len(weights)).astype(np.int64)


class BatchSampler:
    """Batches of anchor rows composed by group, time window and stratum; DDP-sharded.

    See the module docstring for the composition, the epochs and the Lightning wiring.

    Args:
        index: A cell index (an object with a ``.table`` DataFrame) or the DataFrame; the
            rows with ``anchor == True`` are drawn.
        batch_size: Anchors per batch (per rank), an integer >= 1.
        batches_per_epoch: Global batches per epoch (split across ranks); default: as many as
            the anchors allow without repeats (``replacement=False``), or
            ``n_anchors // batch_size`` (``replacement=True``).
        group_by: Column whose value is shared by a batch (category, string, integer or bool
            column), e.g. ``"experiment"``; None: no grouping.
        leaky: Fraction of each batch drawn from the other groups, in [0, 1] (needs
            ``group_by`` and two groups when > 0).
        stratify_by: Column whose values get equal shares within each pool, e.g.
            ``"condition"``; None: no stratification.
        stratify_fractions: Share of each value of ``stratify_by`` (every value named, each
            in [0, 1], summing to 1) instead of equal shares.
        temporal_window: ``(t0, t1)`` frames, inclusive: the focal window.
        temporal_fraction: Fraction of each batch (of each part) with ``t`` in the window, in
            [0, 1]; given together with ``temporal_window``.
        replacement: Whether an anchor may repeat within an epoch (see the module docstring).
        seed: Integer >= 0; with the epoch it fixes every draw.
        num_replicas: DDP world size.
        rank: This process's rank in ``[0, num_replicas)``.
        drop_last: Drop the batches that do not divide evenly over the ranks (True), or pad
            with the epoch's first batches (False).

    Raises:
        SamplerError: an option of the wrong type or out of range, an unknown column, no valid
            anchors, a pool that a batch needs but that has no anchors, or (without
            replacement) a batch size or epoch length the anchors cannot fill; each names the
            option and the value.
    """

    def __init__(
        self,
        index: Any,
        *,
        batch_size: int,
        batches_per_epoch: int | None = None,
        group_by: str | None = None,
        leaky: float = 0.0,
        stratify_by: str | None = None,
        stratify_fractions: Mapping[Any, float] | None = None,
        temporal_window: tuple[int, int] | None = None,
        temporal_fraction: float | None = None,
        replacement: bool = False,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
    ) -> None:
        table = _table(index)
        self.batch_size = _integer(batch_size, "batch_size", 1)
        self.seed = _integer(seed, "seed", 0)
        self.num_replicas = _integer(num_replicas, "num_replicas", 1)
        self.rank = _integer(rank, "rank", 0)
        if self.rank >= self.num_replicas:
            raise SamplerError(
                f"rank {self.rank} must lie in [0, num_replicas={self.num_replicas})"
            )
        self.replacement = _flag(replacement, "replacement")
        self.drop_last = _flag(drop_last, "drop_last")
        self.leaky = _fraction(leaky, "leaky")
        self.group_by, self.stratify_by = group_by, stratify_by
        self.epoch = 0
        anchors = _anchor_rows(table)
        self.n_anchors = len(anchors)
        group, self.groups = _codes(table, group_by, "group_by", anchors)
        stratum, self.strata = _codes(table, stratify_by, "stratify_by", anchors)
        window, self.temporal_window, self.temporal_fraction = _windows(
            table, anchors, temporal_window, temporal_fraction
        )
        if self.leaky > 0 and group_by is None:
            raise SamplerError(
                f"leaky={leaky!r} needs group_by (the fraction of each batch from other groups)"
            )
        if self.leaky > 0 and len(self.groups) < 2:
            raise SamplerError(
                f"leaky={leaky!r} needs at least two groups in group_by={group_by!r}, found "
                f"{self.groups}"
            )
        self._stratum_weights = _stratum_weights(stratify_fractions, stratify_by, self.strata)
        self._shape = (len(self.groups), 2 if self.temporal_window else 1, len(self.strata))
        segment = np.ravel_multi_index((group, window, stratum), self._shape)
        self._sizes = np.bincount(segment, minlength=int(np.prod(self._shape)))
        self._members = anchors[np.argsort(segment, kind="stable")]
        self._member_start = np.cumsum(self._sizes) - self._sizes
        self.leak_per_batch = _round_half_up(self.batch_size * self.leaky)
        self._group_weights = np.bincount(group, minlength=len(self.groups))
        self._nodes = [self._group_nodes(g) for g in range(len(self.groups))]
        self._plan_epoch(batches_per_epoch)
        self._cache: tuple[int, np.ndarray] | None = None
        logger.info(
            "BatchSampler: %d anchors, %d groups x %d windows x %d strata, %d global batches "
            "of %d per epoch (%d on rank %d of %d), replacement=%s",
            self.n_anchors,
            *self._shape,
            self._n_real,
            self.batch_size,
            self.batches_per_rank,
            self.rank,
            self.num_replicas,
            self.replacement,
        )

    @classmethod
    def from_config(
        cls, index: Any, config: SamplerConfig, *, num_replicas: int = 1, rank: int = 0
    ) -> BatchSampler:
        """The sampler of ``config`` over ``index`` for one rank (``decay`` is not the
        sampler's: pass it to ``draw_positives``).

        Raises:
            SamplerError: as the constructor.
        """
        return cls(
            index,
            **config.model_dump(exclude={"decay"}),
            num_replicas=num_replicas,
            rank=rank,
        )

    # -- composition -------------------------------------------------------------------------

    def _window_counts(self, part: int) -> list[tuple[int, int]]:
        """``(window, anchors per batch)`` of a part: window 0 is inside, 1 outside."""
        if self.temporal_fraction is None:
            return [(0, part)]
        inside = _round_half_up(part * self.temporal_fraction)
        return [(0, inside), (1, part - inside)]

    def _describe(self, group: int | None, window: int | None, stratum: int | None) -> str:
        words = []
        if group is not None and self.group_by is not None:
            words.append(f"{self.group_by}={self.groups[group]!r}")
        if window is not None and self.temporal_window is not None:
            t0, t1 = self.temporal_window
            words.append(f"t {'inside' if window == 0 else 'outside'} [{t0}, {t1}]")
        if stratum is not None and self.stratify_by is not None:
            words.append(f"{self.stratify_by}={self.strata[stratum]!r}")
        return ", ".join(words) if words else "all anchors"

    def _group_nodes(self, group: int) -> list[_Node]:
        """The pool cells of a batch of ``group``: its own part, then the leak."""
        sizes = self._sizes.reshape(self._shape)
        nodes: list[_Node] = []
        main = self.batch_size - self.leak_per_batch
        for window, count in self._window_counts(main):
            if count == 0:
                continue
            weights = self._present_weights(sizes[group, window] > 0)
            if not weights.any():
                raise SamplerError(
                    f"no anchor with {self._describe(group, window, None)}, but each batch of "
                    f"that group draws {count} there (check group_by, temporal_window, "
                    f"temporal_fraction, stratify_fractions)"
                )
            strata = [
                (float(weights[s]), [(1.0, self._segment(group, window, s))])
                for s in np.flatnonzero(weights).tolist()
            ]
            nodes.append((count, strata))
        for window, count in self._window_counts(self.leak_per_batch):
            if count == 0:
                continue
            others = sizes[:, window, :].copy()
            others[group] = 0
            weights = self._present_weights(others.sum(axis=0) > 0)
            if not weights.any():
                raise SamplerError(
                    f"leaky={self.leaky}: no anchor of a group other than "
                    f"{self._describe(group, None, None)} with "
                    f"{self._describe(None, window, None)}, but each of its batches leaks "
                    f"{count} there"
                )
            strata = []
            for s in np.flatnonzero(weights).tolist():
                sources = np.flatnonzero(others[:, s]).tolist()
                strata.append(
                    (
                        float(weights[s]),
                        [(float(others[h, s]), self._segment(h, window, s)) for h in sources],
                    )
                )
            nodes.append((count, strata))
        return nodes

    def _present_weights(self, present: np.ndarray) -> np.ndarray:
        return np.where(present, self._stratum_weights, 0.0)

    def _segment(self, group: int, window: int, stratum: int) -> int:
        return int(np.ravel_multi_index((group, window, stratum), self._shape))

    def _batches_per_group(self, batches: int) -> np.ndarray:
        return largest_remainder(batches, self._group_weights)

    def _demand(self, batches: int) -> np.ndarray:
        """Anchors an epoch of ``batches`` global batches takes from each segment."""
        demand = np.zeros(len(self._sizes), dtype=np.int64)
        for group, count in enumerate(self._batches_per_group(batches)):
            for per_batch, strata in self._nodes[group] if count else []:
                totals = largest_remainder(count * per_batch, np.array([w for w, _ in strata]))
                for (_, sources), total in zip(strata, totals, strict=True):
                    parts = largest_remainder(int(total), np.array([w for w, _ in sources]))
                    demand[[segment for _, segment in sources]] += parts
        return demand

    def _templates(self, batches: int) -> None:
        """Per global batch (ordered by group), how many anchors it takes from each segment."""
        template, segment, count = [], [], []
        first = 0
        for group, n in enumerate(self._batches_per_group(batches)):
            ids = np.arange(first, first + n)
            first += n
            for per_batch, strata in self._nodes[group] if n else []:
                by_stratum = _split(np.full(n, per_batch), np.array([w for w, _ in strata]))
                for column, (_, sources) in enumerate(strata):
                    by_source = _split(by_stratum[:, column], np.array([w for w, _ in sources]))
                    for position, (_, source) in enumerate(sources):
                        template.append(ids)
                        segment.append(np.full(n, source))
                        count.append(by_source[:, position])
        ids, segments, counts = (np.concatenate(a) for a in (template, segment, count))
        order = np.argsort(ids, kind="stable")
        kept = order[counts[order] > 0]
        self._template_segment = segments[kept]
        self._template_count = counts[kept]
        self._template_start = np.r_[0, np.cumsum(np.bincount(ids[kept], minlength=batches))]
        self._demand_per_epoch = np.bincount(
            self._template_segment, weights=self._template_count, minlength=len(self._sizes)
        ).astype(np.int64)

    def _fits(self, batches: int) -> bool:
        return bool(np.all(self._demand(batches) <= self._sizes))

    def _worst(self, batches: int) -> str:
        demand = self._demand(batches)
        ratio = demand / np.maximum(self._sizes, 1)
        segment = int(np.argmax(ratio))
        cell = np.unravel_index(segment, self._shape)
        return (
            f"{self._describe(*(int(c) for c in cell))} has {self._sizes[segment]} anchors but "
            f"{batches} batch(es) take {demand[segment]} from it"
        )

    def _max_batches(self) -> int:
        """Most global batches the anchors fill without repeating one (replacement=False)."""
        batches = self.n_anchors // self.batch_size
        if batches == 0:
            raise SamplerError(
                f"replacement=False: batch_size={self.batch_size} is larger than the pool of "
                f"{self.n_anchors} valid anchors (use replacement=True or a smaller batch_size)"
            )
        ceiling, infeasible = batches, batches + 1
        while batches > 0:
            load = float((self._demand(batches) / np.maximum(self._sizes, 1)).max())
            if load <= 1.0:
                # the jump may undershoot: climb back to just below the first misfit
                while batches + 1 < infeasible and self._fits(batches + 1):
                    batches += 1
                return batches
            infeasible = batches
            batches = min(batches - 1, int(batches / load))
        raise SamplerError(
            f"replacement=False: not one batch of batch_size={self.batch_size} fits the "
            f"composition: {self._worst(1)} (use replacement=True, a smaller batch_size or "
            f"fewer constraints; {ceiling} batches would fit without them)"
        )

    def _plan_epoch(self, batches_per_epoch: int | None) -> None:
        replicas = self.num_replicas
        if batches_per_epoch is not None:
            requested = _integer(batches_per_epoch, "batches_per_epoch", 1)
        elif self.replacement:
            requested = max(1, self.n_anchors // self.batch_size)
        else:
            requested = self._max_batches()
        per_rank = requested // replicas if self.drop_last else -(-requested // replicas)
        if per_rank == 0:
            raise SamplerError(
                f"batches_per_epoch={requested} gives no batch to each of num_replicas="
                f"{replicas} ranks with drop_last=True"
            )
        real = per_rank * replicas if self.drop_last else requested
        if not self.replacement and batches_per_epoch is None and self.drop_last:
            while per_rank > 0 and not self._fits(per_rank * replicas):
                per_rank -= 1  # rounding may make fewer batches take one anchor more
            if per_rank == 0:
                raise SamplerError(
                    f"replacement=False: the anchors fill fewer than num_replicas={replicas} "
                    f"batches of batch_size={self.batch_size}: {self._worst(replicas)}"
                )
            real = per_rank * replicas
        elif not self.replacement and not self._fits(real):
            raise SamplerError(
                f"batches_per_epoch={batches_per_epoch} with replacement=False needs {real} "
                f"batches of {self.batch_size} without repeating an anchor, but at most "
                f"{self._max_batches()} fit: {self._worst(real)} (lower batches_per_epoch or "
                f"use replacement=True)"
            )
        self.batches_per_rank = per_rank
        self._n_real = real
        self._templates(real)

    # -- epochs ------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (an integer >= 0)."""
        self.epoch = _integer(epoch, "epoch", 0)

    @property
    def sampler(self) -> BatchSampler:
        """The sampler itself: where Lightning looks for ``set_epoch``
        (``dataloader.batch_sampler.sampler``)."""
        return self

    def __len__(self) -> int:
        """Batches per rank per epoch (what iteration yields)."""
        return self.batches_per_rank

    def global_batches(self) -> np.ndarray:
        """Every rank's batches of the current epoch, in global order (rank ``r`` gets rows
        ``r, r + num_replicas, ...``).

        Shapes:
            returns ``(len(self) * num_replicas, batch_size)`` int64 row positions.
        """
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(self._n_real)
        start = self._template_start[order]
        lengths = self._template_start[order + 1] - start
        request = np.repeat(start - (np.cumsum(lengths) - lengths), lengths)
        request += np.arange(len(request))
        segment, count = self._template_segment[request], self._template_count[request]
        by_segment = np.argsort(segment, kind="stable")
        taken_before = np.empty_like(count)
        sorted_count = count[by_segment]
        taken_before[by_segment] = np.cumsum(sorted_count) - sorted_count
        position = np.repeat(taken_before - (np.cumsum(count) - count), count)
        position += np.arange(len(position))
        batches = self._sequences(rng)[position].reshape(self._n_real, self.batch_size)
        batches = rng.permuted(batches, axis=1)
        total = self.batches_per_rank * self.num_replicas
        if total > self._n_real:
            batches = np.resize(batches, (total, self.batch_size))
        self._cache = (self.epoch, batches)
        return batches

    def _sequences(self, rng: np.random.Generator) -> np.ndarray:
        """Per segment (in order), the epoch's sequence of its anchors, concatenated."""
        parts = []
        for segment in np.flatnonzero(self._demand_per_epoch):
            size, demand = int(self._sizes[segment]), int(self._demand_per_epoch[segment])
            start = self._member_start[segment]
            members = self._members[start : start + size]
            rounds, rest = divmod(demand, size)
            picks = [np.argsort(rng.random((rounds, size)), axis=1).ravel()] if rounds else []
            picks.append(rng.choice(size, size=rest, replace=False))
            parts.append(members[np.concatenate(picks)])
        return np.concatenate(parts)

    def batches(self) -> np.ndarray:
        """This rank's batches of the current epoch.

        Shapes:
            returns ``(len(self), batch_size)`` int64 row positions into the index table.
        """
        return self.global_batches()[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's ``len(self)`` batches for the current epoch, as lists of row positions."""
        for batch in self.batches():
            yield batch.tolist()


def _anchor_rows(table: pd.DataFrame) -> np.ndarray:
    if "anchor" not in table.columns:
        raise SamplerError(
            f"the cell index has no 'anchor' column (valid anchors); columns found: "
            f"{list(table.columns)}"
        )
    column = table["anchor"]
    if not pd.api.types.is_bool_dtype(column.dtype):
        raise SamplerError(f"cell index column 'anchor' must be bool, found dtype {column.dtype}")
    anchors = np.flatnonzero(column.to_numpy(dtype=bool))
    if not len(anchors):
        raise SamplerError(
            f"no valid anchors: none of the {len(table)} rows of the cell index has "
            f"anchor == True (no observation has a positive in the index's tau range)"
        )
    return anchors.astype(np.int64)


def _codes(
    table: pd.DataFrame, column: str | None, option: str, anchors: np.ndarray
) -> tuple[np.ndarray, list[Any]]:
    """Dense codes of a column over the anchors, and the values they stand for (sorted)."""
    if column is None:
        return np.zeros(len(anchors), dtype=np.int64), [None]
    if not isinstance(column, str) or column not in table.columns:
        raise SamplerError(
            f"{option}={column!r} is not a column of the cell index; columns: {list(table.columns)}"
        )
    series = table[column]
    dtype = series.dtype
    usable = (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_integer_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    )
    if not usable:
        raise SamplerError(
            f"{option}={column!r} must name a categorical column (category, string, integer or "
            f"bool), found dtype {dtype}"
        )
    codes, values = pd.factorize(series.iloc[anchors], sort=True)
    if np.any(codes < 0):
        raise SamplerError(
            f"{option}={column!r} has missing values at {int(np.sum(codes < 0))} anchor rows"
        )
    return codes.astype(np.int64), list(values)


def _windows(
    table: pd.DataFrame,
    anchors: np.ndarray,
    window: tuple[int, int] | None,
    fraction: float | None,
) -> tuple[np.ndarray, tuple[int, int] | None, float | None]:
    """Window code per anchor (0 inside, 1 outside), the checked window and fraction."""
    if window is None and fraction is None:
        return np.zeros(len(anchors), dtype=np.int64), None, None
    if window is None or fraction is None:
        raise SamplerError(
            f"temporal_window and temporal_fraction go together, found temporal_window="
            f"{window!r}, temporal_fraction={fraction!r}"
        )
    checked = _fraction(fraction, "temporal_fraction")
    if (
        not isinstance(window, tuple | list)
        or len(window) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in window)
    ):
        raise SamplerError(f"temporal_window must be two integer frames (t0, t1), found {window!r}")
    t0, t1 = int(window[0]), int(window[1])
    if not 0 <= t0 <= t1:
        raise SamplerError(
            f"temporal_window=({t0}, {t1}) is empty or negative: expected 0 <= t0 <= t1"
        )
    if "t" not in table.columns:
        raise SamplerError(
            f"temporal_window needs the cell index column 't'; columns: {list(table.columns)}"
        )
    t = table["t"].to_numpy()[anchors]
    inside = (t >= t0) & (t <= t1)
    return np.where(inside, 0, 1).astype(np.int64), (t0, t1), checked


def _stratum_weights(
    fractions: Mapping[Any, float] | None, stratify_by: str | None, strata: list[Any]
) -> np.ndarray:
    """Weight of each stratum: equal, or the checked ``stratify_fractions``."""
    if fractions is None:
        return np.ones(len(strata))
    if stratify_by is None:
        raise SamplerError("stratify_fractions needs stratify_by (the column they refer to)")
    if not isinstance(fractions, Mapping):
        raise SamplerError(
            f"stratify_fractions must map values of {stratify_by!r} to fractions, found "
            f"{type(fractions).__name__}"
        )
    unknown = [key for key in fractions if key not in strata]
    if unknown:
        raise SamplerError(
            f"stratify_fractions names {unknown}, which are not values of {stratify_by!r} "
            f"among the anchors: {strata}"
        )
    missing = [value for value in strata if value not in fractions]
    if missing:
        raise SamplerError(
            f"stratify_fractions must name every value of {stratify_by!r} among the anchors; "
            f"missing {missing}"
        )
    weights = np.array(
        [_fraction(fractions[v], f"stratify_fractions[{v!r}]") for v in strata], dtype=np.float64
    )
    if not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-9):
        raise SamplerError(
            f"stratify_fractions must sum to 1, found {float(weights.sum()):g} ({dict(fractions)})"
        )
    return weights
