"""Samplers over a patch index: reproducible from (seed, epoch) and sharded across DDP ranks.

Each sampler draws one global sequence per epoch from ``numpy.random.default_rng((seed,
epoch))``, pads it to a multiple of ``num_replicas`` by repeating its start, and gives rank
``r`` the elements ``r, r + num_replicas, ...``: ranks never overlap within the sequence and
all get the same length, which DDP needs to keep collective calls in step. They are plain
iterables with ``__len__`` and ``set_epoch``, so a PyTorch ``DataLoader`` takes them as its
``sampler`` without voxflow-slicing importing torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ._errors import SlicingError
from ._index import PatchIndex


class _Seeded:
    """Seed, epoch and DDP rank shared by every sampler."""

    def __init__(self, *, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise SlicingError(f"rank {rank} must lie in [0, num_replicas={num_replicas})")
        self.seed = int(seed)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sequence the next iteration yields."""
        self.epoch = int(epoch)

    def _generator(self) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch))


class _ShardedSampler(_Seeded, ABC):
    """Index samplers: subclasses give the epoch's global sequence, this shards it."""

    @abstractmethod
    def _global_sequence(self) -> np.ndarray:
        """The whole epoch's draws, before sharding."""

    @abstractmethod
    def _global_length(self) -> int:
        """Length of the unpadded global sequence."""

    def shard(self) -> np.ndarray:
        """This rank's ``(len(self),)`` int64 draws for the current epoch."""
        sequence = self._global_sequence()
        total = len(self) * self.num_replicas
        if total > len(sequence):
            sequence = np.concatenate([sequence, sequence[: total - len(sequence)]])
        return sequence[self.rank : total : self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(self._global_length() / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard().tolist())


class UniformSampler(_ShardedSampler):
    """Every window of the index once per epoch, in a seeded random order (or in order)."""

    def __init__(
        self,
        index: PatchIndex,
        *,
        seed: int,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        if len(index) == 0:
            raise SlicingError("the patch index is empty: nothing to sample")
        self.size = len(index)
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
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        weights = np.asarray(index.weights, np.float64).copy()
        if balance_volumes:
            weights /= index.counts()[index.volume_ids]
        if (
            len(weights) == 0
            or not np.all(np.isfinite(weights))
            or weights.min() < 0
            or weights.sum() <= 0
        ):
            raise SlicingError("weights must be finite, non-negative and not all zero")
        if num_samples < 1:
            raise SlicingError(f"num_samples must be >= 1, found {num_samples}")
        self.probabilities = weights / weights.sum()
        self.num_samples = num_samples

    def _global_length(self) -> int:
        return self.num_samples

    def _global_sequence(self) -> np.ndarray:
        return (
            self._generator()
            .choice(len(self.probabilities), size=self.num_samples, p=self.probabilities)
            .astype(np.int64)
        )


@dataclass(frozen=True)
class PatchDraw:
    """One sampled patch.

    Attributes:
        volume: Volume name.
        start: ``(D,)`` int64 window start; may reach outside the volume for patches
            centred on foreground near a border (extract with a padding border policy).
        foreground_centred: Whether the patch was centred on a foreground voxel.
    """

    volume: str
    start: np.ndarray
    foreground_centred: bool


class ForegroundOversampler(_Seeded):
    """nnU-Net-style batches: a fraction centred on voxels of chosen classes, the rest random.

    Within every batch, the last ``round(batch_size * foreground_fraction)`` draws are centred
    on a voxel picked uniformly from ``locations`` (class picked uniformly among those present
    in the volume), the others are windows drawn uniformly from the index. Reproducible from
    (seed, epoch); sharded by giving each rank whole batches of the global sequence.

    Args:
        index: The patch index (its patch size and volumes).
        locations: Per volume name, per class, ``(K, D)`` int64 voxel coordinates of that
            class (full resolution), e.g. a random subset of each class's voxels.
        batch_size: Per-rank batch size.
        batches_per_epoch: Global batches per epoch (split across ranks).
        foreground_fraction: Share of each batch centred on foreground, in [0, 1].
    """

    def __init__(
        self,
        index: PatchIndex,
        locations: dict[str, dict[int, np.ndarray]],
        *,
        batch_size: int,
        batches_per_epoch: int,
        foreground_fraction: float,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0.0 <= foreground_fraction <= 1.0:
            raise SlicingError(
                f"foreground_fraction must lie in [0, 1], found {foreground_fraction}"
            )
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        if batch_size < 1 or batches_per_epoch < 1:
            raise SlicingError("batch_size and batches_per_epoch must be >= 1")
        unknown = sorted(set(locations) - set(index.volumes))
        if unknown:
            raise SlicingError(f"locations name volumes {unknown} that are not in the index")
        self.index = index
        self.locations = {
            name: {
                c: np.asarray(v, np.int64).reshape(-1, len(index.patch_size))
                for c, v in classes.items()
                if len(v)
            }
            for name, classes in locations.items()
        }
        self.volumes_with_foreground = [n for n in index.volumes if self.locations.get(n)]
        if foreground_fraction > 0 and not self.volumes_with_foreground:
            raise SlicingError("foreground_fraction > 0 but no volume has foreground locations")
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.foreground_per_batch = round(batch_size * foreground_fraction)

    def __len__(self) -> int:
        return math.ceil(self.batches_per_epoch / self.num_replicas) * self.batch_size

    def batches(self) -> list[list[PatchDraw]]:
        """This rank's batches for the current epoch."""
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
        for batch in self.batches():
            yield from batch


def sample_locations(
    labels: np.ndarray, classes: Sequence[int], *, max_per_class: int, seed: int
) -> dict[int, np.ndarray]:
    """Up to ``max_per_class`` random voxel coordinates of each class (nnU-Net's class locations).

    Shapes:
        labels: ``(*spatial)`` integer array -> per class ``(K, D)`` int64, K <= max_per_class.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for value in classes:
        coordinates = np.argwhere(np.asarray(labels) == value)
        if len(coordinates) > max_per_class:
            coordinates = coordinates[rng.choice(len(coordinates), max_per_class, replace=False)]
        out[int(value)] = coordinates.astype(np.int64)
    return out
