"""Samplers over a patch index: reproducible from (seed, epoch) and sharded across DDP ranks.

Each sampler draws one global sequence per epoch from ``numpy.random.default_rng((seed,
epoch))``, pads it to a multiple of ``num_replicas`` by repeating it from its start (as
PyTorch's ``DistributedSampler`` does, however many times that takes), and gives rank ``r``
the elements ``r, r + num_replicas, ...``: every rank yields exactly ``len(sampler)`` draws,
which DDP needs to keep collective calls in step, even with more ranks than windows. Every
sampler yields [PatchDraw][voxflow_slicing.PatchDraw] records. They are plain iterables with
``__len__`` and ``set_epoch``, so a PyTorch ``DataLoader`` takes them as its ``sampler``
without voxflow-slicing importing torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._checks import array_shape, as_int, as_int_array, as_int_tuple, as_real
from ._errors import SamplerError
from ._patch_index import PatchIndex


@dataclass(frozen=True, eq=False)
class PatchDraw:
    """One sampled patch, the record every sampler yields.

    Attributes:
        volume: Volume name.
        start: ``(D,)`` int64 window start; may reach outside the volume for patches
            centred on foreground near a border (extract with a padding border policy).
        foreground_centred: Whether the patch was centred on a foreground voxel.

    Two draws are equal when volume, start and flag are.
    """

    volume: str
    start: np.ndarray
    foreground_centred: bool

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatchDraw):
            return NotImplemented
        return (
            self.volume == other.volume
            and self.foreground_centred == other.foreground_centred
            and np.array_equal(self.start, other.start)
        )

    __hash__ = None  # type: ignore[assignment]


class _Seeded:
    """Seed, epoch and DDP rank shared by every sampler."""

    def __init__(self, *, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.seed = as_int(seed, "seed", error=SamplerError, minimum=0)
        self.num_replicas = as_int(num_replicas, "num_replicas", error=SamplerError, minimum=1)
        self.rank = as_int(rank, "rank", error=SamplerError, minimum=0)
        if self.rank >= self.num_replicas:
            raise SamplerError(
                f"rank {self.rank} must lie in [0, num_replicas={self.num_replicas})"
            )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sequence the next iteration yields (an integer >= 0)."""
        self.epoch = as_int(epoch, "epoch", error=SamplerError, minimum=0)

    def _generator(self) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch))


def _check_index(index: object) -> PatchIndex:
    if not isinstance(index, PatchIndex):
        raise SamplerError(f"index must be a PatchIndex, found {type(index).__name__}")
    return index


class _ShardedSampler(_Seeded, ABC):
    """Index samplers: subclasses give the epoch's global sequence, this shards it."""

    def __init__(self, index: PatchIndex, *, seed: int, num_replicas: int, rank: int) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        self.index = _check_index(index)

    @abstractmethod
    def _global_sequence(self) -> np.ndarray:
        """The whole epoch's draws, before sharding."""

    @abstractmethod
    def _global_length(self) -> int:
        """Length of the unpadded global sequence (at least 1)."""

    def shard(self) -> np.ndarray:
        """This rank's positions in the index for the current epoch.

        The global sequence is repeated from its start until its length is a multiple of
        ``num_replicas`` (PyTorch's ``DistributedSampler`` padding), then dealt round robin.

        Returns:
            ``(len(self),)`` int64 positions into the index's arrays.
        """
        padded = np.resize(self._global_sequence(), len(self) * self.num_replicas)
        return padded[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(self._global_length() / self.num_replicas)

    def __iter__(self) -> Iterator[PatchDraw]:
        """This rank's draws for the current epoch, ``len(self)`` of them.

        Yields:
            One record per position of ``shard()``, in that order (``foreground_centred``
                False).
        """
        volumes, ids, positions = self.index.volumes, self.index.volume_ids, self.index.positions
        for i in self.shard():
            yield PatchDraw(volumes[ids[i]], positions[i].copy(), False)


class UniformSampler(_ShardedSampler):
    """Every window of the index once per epoch, in a seeded random order (or in order).

    Iterating yields this rank's [PatchDraw][voxflow_slicing.PatchDraw] records
    (``foreground_centred`` False); ``shard()`` gives the same draws as positions into the
    index.

    Args:
        index: The patch index (at least one window).
        seed: Integer >= 0; with the epoch it fixes the order.
        shuffle: Random order (True) or index order.
        num_replicas: DDP world size.
        rank: This process's rank in ``[0, num_replicas)``.
    """

    def __init__(
        self,
        index: PatchIndex,
        *,
        seed: int,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(index, seed=seed, num_replicas=num_replicas, rank=rank)
        if len(self.index) == 0:
            raise SamplerError("the patch index is empty: nothing to sample")
        if not isinstance(shuffle, bool):
            raise SamplerError(f"shuffle must be True or False, found {shuffle!r}")
        self.size = len(self.index)
        self.shuffle = shuffle

    def _global_length(self) -> int:
        return self.size

    def _global_sequence(self) -> np.ndarray:
        if self.shuffle:
            return self._generator().permutation(self.size).astype(np.int64)
        return np.arange(self.size, dtype=np.int64)


class WeightedSampler(_ShardedSampler):
    """``num_samples`` draws with replacement, window ``i`` with probability ∝ ``weights[i]``.

    With ``balance_volumes=True`` each volume's windows share that volume's weight, so every
    volume is drawn as often as its weight says, however many windows it has.

    Iterating yields this rank's [PatchDraw][voxflow_slicing.PatchDraw] records
    (``foreground_centred`` False); ``shard()`` gives the same draws as positions into the
    index.

    Args:
        index: The patch index (weights not all zero).
        num_samples: Global draws per epoch (split across ranks), an integer >= 1.
        seed: Integer >= 0.
        balance_volumes: Divide each volume's weight among its windows.
        num_replicas: DDP world size.
        rank: This process's rank in ``[0, num_replicas)``.
    """

    def __init__(
        self,
        index: PatchIndex,
        *,
        num_samples: int,
        seed: int,
        balance_volumes: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(index, seed=seed, num_replicas=num_replicas, rank=rank)
        self.num_samples = as_int(num_samples, "num_samples", error=SamplerError, minimum=1)
        weights = np.asarray(self.index.weights, np.float64).copy()
        if balance_volumes:
            weights /= self.index.counts()[self.index.volume_ids]
        if len(weights) == 0 or weights.sum() <= 0:
            raise SamplerError(
                f"weights of the {len(weights)} windows must not all be zero (or absent)"
            )
        self.probabilities = weights / weights.sum()

    def _global_length(self) -> int:
        return self.num_samples

    def _global_sequence(self) -> np.ndarray:
        return (
            self._generator()
            .choice(len(self.probabilities), size=self.num_samples, p=self.probabilities)
            .astype(np.int64)
        )


class ForegroundOversampler(_Seeded):
    """nnU-Net-style batches: a fraction centred on voxels of chosen classes, the rest random.

    Within every batch, the last ``round(batch_size * foreground_fraction)`` draws are centred
    on a voxel picked uniformly from ``locations`` (class picked uniformly among those present
    in the volume), the others are windows drawn uniformly from the index. Reproducible from
    (seed, epoch); sharded by giving each rank whole batches of the global sequence (the
    sequence is extended to a multiple of ``num_replicas`` batches, so every rank yields
    ``len(self)`` draws).

    Args:
        index: The patch index (its patch size, volumes and their shapes).
        locations: Per volume name, per class, ``(K, D)`` integer voxel coordinates of that
            class (full resolution, inside the volume's shape), e.g. from
            [sample_locations][voxflow_slicing.sample_locations].
        batch_size: Per-rank batch size.
        batches_per_epoch: Global batches per epoch (split across ranks).
        foreground_fraction: Share of each batch centred on foreground, in [0, 1].
        seed: Integer >= 0.
        num_replicas: DDP world size.
        rank: This process's rank in ``[0, num_replicas)``.

    Raises:
        SamplerError: Locations of the wrong rank or outside their volume (naming volume and
            class), unknown volume names, or invalid sizes, fractions, seed or ranks.
    """

    def __init__(
        self,
        index: PatchIndex,
        locations: Mapping[str, Mapping[int, np.ndarray]],
        *,
        batch_size: int,
        batches_per_epoch: int,
        foreground_fraction: float,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        self.index = _check_index(index)
        fraction = as_real(
            foreground_fraction, "foreground_fraction", error=SamplerError, minimum=0, maximum=1
        )
        self.batch_size = as_int(batch_size, "batch_size", error=SamplerError, minimum=1)
        self.batches_per_epoch = as_int(
            batches_per_epoch, "batches_per_epoch", error=SamplerError, minimum=1
        )
        if not isinstance(locations, Mapping):
            raise SamplerError(
                f"locations must map volume names to {{class: (K, D) coordinates}}, found "
                f"{type(locations).__name__}"
            )
        unknown = sorted(set(locations) - set(index.volumes))
        if unknown:
            raise SamplerError(f"locations name volumes {unknown} that are not in the index")
        self.locations = {
            name: _check_locations(name, classes, index) for name, classes in locations.items()
        }
        self.volumes_with_foreground = [n for n in index.volumes if self.locations.get(n)]
        if fraction > 0 and not self.volumes_with_foreground:
            raise SamplerError("foreground_fraction > 0 but no volume has foreground locations")
        self.foreground_per_batch = round(self.batch_size * fraction)
        if self.foreground_per_batch < self.batch_size and len(index) == 0:
            raise SamplerError(
                "the patch index is empty, but each batch needs "
                f"{self.batch_size - self.foreground_per_batch} random windows from it"
            )

    def __len__(self) -> int:
        return math.ceil(self.batches_per_epoch / self.num_replicas) * self.batch_size

    def batches(self) -> list[list[PatchDraw]]:
        """This rank's ``ceil(batches_per_epoch / num_replicas)`` batches for the epoch."""
        rng = self._generator()
        per_rank = math.ceil(self.batches_per_epoch / self.num_replicas)
        half = np.asarray(self.index.patch_size, np.int64) // 2
        result: list[list[PatchDraw]] = []
        for batch_number in range(per_rank * self.num_replicas):
            batch = self._draw_batch(rng, half)
            if batch_number % self.num_replicas == self.rank:
                result.append(batch)
        return result

    def _draw_batch(self, rng: np.random.Generator, half: np.ndarray) -> list[PatchDraw]:
        batch = []
        random_count = self.batch_size - self.foreground_per_batch
        for i in rng.integers(0, len(self.index), size=random_count):
            batch.append(
                PatchDraw(
                    self.index.volumes[self.index.volume_ids[i]],
                    self.index.positions[i].copy(),
                    False,
                )
            )
        for _ in range(self.foreground_per_batch):
            name = self.volumes_with_foreground[rng.integers(len(self.volumes_with_foreground))]
            classes = sorted(self.locations[name])
            voxels = self.locations[name][classes[rng.integers(len(classes))]]
            centre = voxels[rng.integers(len(voxels))]
            batch.append(PatchDraw(name, centre - half, True))
        return batch

    def __iter__(self) -> Iterator[PatchDraw]:
        """This rank's draws for the current epoch, ``len(self)`` of them.

        Yields:
            The draws of ``batches()``, batch after batch (random windows first, then the
                foreground-centred ones).
        """
        for batch in self.batches():
            yield from batch


def _check_locations(
    name: str, classes: Mapping[int, np.ndarray], index: PatchIndex
) -> dict[int, np.ndarray]:
    """One volume's class locations as ``(K, D)`` int64 arrays inside its shape (empty dropped)."""
    if not isinstance(classes, Mapping):
        raise SamplerError(
            f"locations[{name!r}] must map classes to (K, D) coordinates, found "
            f"{type(classes).__name__}"
        )
    shape = np.array(index.shapes[index.volumes.index(name)], np.int64)
    d = len(shape)
    checked = {}
    for value, voxels in classes.items():
        where = f"locations[{name!r}][{value!r}] (volume {name!r}, class {value!r})"
        array = as_int_array(voxels, where, error=SamplerError)
        if array.ndim != 2 or array.shape[1] != d:
            raise SamplerError(
                f"{where}: expected (K, {d}) voxel coordinates, found shape {array.shape}"
            )
        outside = np.any((array < 0) | (array >= shape), axis=1)
        if np.any(outside):
            raise SamplerError(
                f"{where}: {int(outside.sum())} of {len(array)} coordinates lie outside the "
                f"volume shape "
                f"{tuple(shape.tolist())}, e.g. {array[np.argmax(outside)].tolist()}"
            )
        if len(array):
            checked[value] = array
    return checked


def sample_locations(
    labels: np.ndarray, classes: Sequence[int], *, max_per_class: int, seed: int
) -> dict[int, np.ndarray]:
    """Up to ``max_per_class`` random voxel coordinates of each class (nnU-Net's class locations).

    Args:
        labels: Integer label array-like (read whole).
        classes: Label values to locate.
        max_per_class: At most this many coordinates per class, an integer >= 1.
        seed: Integer >= 0 for the random subset.

    Shapes:
        labels: ``(*spatial)`` integer array -> per class ``(K, D)`` int64, K <= max_per_class.
    """
    array_shape(labels, "labels", error=SamplerError, min_ndim=1)
    values = as_int_tuple(classes, "classes", error=SamplerError)
    limit = as_int(max_per_class, "max_per_class", error=SamplerError, minimum=1)
    rng = np.random.default_rng(as_int(seed, "seed", error=SamplerError, minimum=0))
    data = np.asarray(labels)
    out = {}
    for value in values:
        coordinates = np.argwhere(data == value)
        if len(coordinates) > limit:
            coordinates = coordinates[rng.choice(len(coordinates), limit, replace=False)]
        out[value] = coordinates.astype(np.int64)
    return out
