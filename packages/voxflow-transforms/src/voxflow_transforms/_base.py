"""The transform protocol: draw per-sample parameters, then apply them to a batch.

Every transform splits randomness from computation (kornia's and MONAI's shape): ``draw``
returns a dictionary of per-sample parameter tensors whose first axis is the batch, and
``apply`` computes the result from a batch and such a dictionary. A call draws and applies and
keeps the parameters in ``last_params``; ``replay`` applies given parameters again, to another
batch or after a change of device.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

from ._batch import Batch, check_keys, check_probability, spatial_layout, unbatch
from ._errors import BatchError

logger = logging.getLogger(__name__)

Params = dict[str, torch.Tensor]
"""Parameters drawn for one call: name -> tensor whose first axis is the batch. ``apply``
(``(B,)`` bool) says which samples the transform acts on."""


def global_seed() -> int:
    # Seeded from torch's global generator so that torch.manual_seed() makes an unseeded
    # transform reproducible, as users expect from torch code.
    return int(torch.randint(0, 2**62, (1,)).item())


class Transform(Randomizable, ABC):
    """Base of every voxflow transform.

    Args:
        keys: the batch keys the transform acts on; ``None`` (spatial transforms only) means
            every tensor of the batch (other values, such as names, pass through).
        prob: probability that a sample is transformed (drawn per sample).
        batched: ``True``: values are ``(B, C, *spatial)``. ``False``: values are one sample
            ``(C, *spatial)``, as inside a per-sample MONAI ``Compose`` in a DataLoader worker.
        seed: seed of the transform's own CPU ``torch.Generator``; ``None`` draws one from
            torch's global generator. A ``Pipeline`` passes its generator instead.

    Shapes:
        batch values: ``(B, C, Z, Y, X)`` or ``(B, C, Y, X)``, any dtype the transform accepts;
        results keep shape (crops excepted) and dtype.
    """

    augmentation = True
    """Random augmentations are skipped in eval mode; normalisation and crops are not."""

    def __init__(
        self,
        keys: Sequence[str] | str | None,
        prob: float = 1.0,
        *,
        batched: bool = True,
        seed: int | None = None,
    ) -> None:
        name = type(self).__name__
        self.keys = None if keys is None else check_keys(f"{name}(keys=...)", keys)
        self.prob = check_probability(f"{name}(prob=...)", prob)
        self.batched = bool(batched)
        self.training = True
        self.generator = torch.Generator()
        self.generator.manual_seed(global_seed() if seed is None else int(seed))
        self.last_params: Params | None = None

    # ---------------------------------------------------------------- what subclasses define
    @abstractmethod
    def draw(
        self, batch_size: int, spatial_shape: tuple[int, ...], generator: torch.Generator
    ) -> Params:
        """Draw the parameters of ``batch_size`` samples of spatial shape ``spatial_shape``."""

    @abstractmethod
    def apply(self, batch: Batch, params: Params) -> Batch:
        """Return a new batch with ``params`` applied to this transform's keys (batched form)."""

    # ---------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> Transform:
        """Training mode (``True``) draws augmentations; eval mode skips them."""
        self.training = bool(mode)
        return self

    def eval(self) -> Transform:
        """Eval mode: random augmentations become identities, channel dropout stops."""
        return self.train(False)

    @property
    def active(self) -> bool:
        """Whether calls transform anything in the current mode."""
        return self.training or not self.augmentation

    # ---------------------------------------------------------------- calling
    def target_keys(self, batch: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
        """The keys this transform acts on in ``batch`` (``keys=None``: every tensor)."""
        if self.keys is not None:
            return self.keys
        return tuple(k for k, v in batch.items() if isinstance(v, torch.Tensor))

    def layout(self, batch: Batch) -> tuple[int, tuple[int, ...]]:
        """``(B, spatial_shape)`` of ``batch`` over this transform's keys, validated."""
        return spatial_layout(batch, self.target_keys(batch), type(self).__name__)

    def skip(self, batch_size: int) -> Params:
        """Parameters that leave every sample unchanged."""
        return {"apply": torch.zeros(batch_size, dtype=torch.bool)}

    def sample(
        self,
        batch_size: int,
        spatial_shape: tuple[int, ...],
        generator: torch.Generator | None = None,
    ) -> Params:
        """Draw parameters, honouring the train/eval mode (eval skips augmentations)."""
        if not self.active:
            return self.skip(batch_size)
        return self.draw(
            batch_size, spatial_shape, self.generator if generator is None else generator
        )

    def draw_for(self, batch: Batch, generator: torch.Generator | None = None) -> Params:
        """Draw parameters for ``batch`` (batched form), honouring the train/eval mode."""
        batch_size, spatial = self.layout(batch)
        return self.sample(batch_size, spatial, generator)

    def __call__(self, data: Mapping[str, Any], generator: torch.Generator | None = None) -> Any:
        """Draw parameters for ``data`` and apply them; they are kept in ``last_params``."""
        batch = self._as_batch(data)
        params = self.draw_for(batch, generator)
        out = self.apply(batch, params)
        self.last_params = params
        return self._as_output(data, out)

    def replay(self, data: Mapping[str, Any], params: Params) -> Any:
        """Apply parameters drawn by an earlier call (``last_params``) to ``data``."""
        batch = self._as_batch(data)
        batch_size, _ = self.layout(batch)
        check_params(type(self).__name__, params, batch_size)
        return self._as_output(data, self.apply(batch, params))

    def _as_batch(self, data: Mapping[str, Any]) -> Batch:
        return to_batch(data, self.batched, type(self).__name__)

    def _as_output(self, data: Mapping[str, Any], out: Batch) -> Any:
        return from_batch(data, out, self.batched)

    # ---------------------------------------------------------------- MONAI compatibility
    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> Transform:
        """Seed the transform (MONAI ``Compose.set_random_state`` calls this)."""
        super().set_random_state(seed=seed, state=state)
        self.generator.manual_seed(int(self.R.randint(0, 2**31 - 1)))
        return self

    def randomize(self, data: Any) -> None:
        """Draw parameters for ``data`` into ``last_params`` without applying them."""
        self.last_params = self.draw_for(self._as_batch(data))


def check_params(where: str, params: Mapping[str, torch.Tensor], batch_size: int) -> None:
    """Raise unless ``params`` holds an ``apply`` mask and every entry has ``batch_size`` rows."""
    if "apply" not in params:
        raise BatchError(f"{where}: parameters lack the 'apply' mask; found {sorted(params)}")
    for name, value in params.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != batch_size:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise BatchError(
                f"{where}: parameter '{name}' must have {batch_size} rows (the batch size), "
                f"found {found}"
            )


def to_batch(data: Mapping[str, Any], batched: bool, where: str) -> Batch:
    """Tensors of ``data`` in batched form (a single sample gains a batch axis of 1)."""
    if not isinstance(data, Mapping):
        raise BatchError(f"{where}: expected a dict of tensors, found {type(data).__name__}")
    batch: Batch = {}
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            # MONAI MetaTensors become plain tensors: the transforms do not track metadata.
            value = value.as_subclass(torch.Tensor)
            batch[key] = value if batched else value.unsqueeze(0)
        else:
            batch[key] = value
    return batch


def from_batch(data: Mapping[str, Any], out: Batch, batched: bool) -> dict[str, Any]:
    """``data`` updated with ``out``, back in single-sample form when not ``batched``."""
    return {**data, **(out if batched else unbatch(out))}
