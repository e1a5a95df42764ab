"""The batch sampler: composition, DDP sharding, epochs and bad options."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from voxflow_contrast.errors import SamplerError
from voxflow_contrast.sampler import BatchSampler

WINDOW = (10, 19)


def anchor_table(
    seed: int,
    *,
    rows: int = 4000,
    groups: int = 3,
    strata: int = 2,
    frames: int = 40,
    anchor_fraction: float = 0.9,
) -> pd.DataFrame:
    """Index-like rows with unequal groups and strata, a frame per row and an anchor flag."""
    rng = np.random.default_rng(seed)
    group_weights = np.arange(1, groups + 1, dtype=float)
    stratum_weights = np.arange(strata, 0, -1, dtype=float) + 1
    return pd.DataFrame(
        {
            "experiment": pd.Categorical(
                rng.choice(
                    [f"exp{g}" for g in range(groups)], rows, p=group_weights / group_weights.sum()
                )
            ),
            "condition": pd.Categorical(
                rng.choice(
                    [f"cond{s}" for s in range(strata)],
                    rows,
                    p=stratum_weights / stratum_weights.sum(),
                )
            ),
            "t": rng.integers(0, frames, rows).astype(np.int32),
            "y": rng.random(rows).astype(np.float32),
            "anchor": rng.random(rows) < anchor_fraction,
        }
    )


def half_up(value: float) -> int:
    return math.floor(value + 0.5)


def inside(table: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    t = table["t"].to_numpy()[rows]
    return (t >= WINDOW[0]) & (t <= WINDOW[1])


options = st.fixed_dictionaries(
    {
        "group": st.booleans(),
        "leaky": st.sampled_from([0.0, 0.1, 0.25, 0.5]),
        "stratify": st.booleans(),
        "temporal": st.sampled_from([None, 0.0, 0.3, 0.5, 1.0]),
        "batch_size": st.integers(4, 48),
        "replicas": st.integers(1, 3),
        "seed": st.integers(0, 2**31 - 1),
        "groups": st.integers(2, 4),
        "strata": st.integers(1, 3),
    }
)


def build(table: pd.DataFrame, o: dict[str, Any], **extra: Any) -> list[BatchSampler]:
    keywords: dict[str, Any] = {
        "batch_size": o["batch_size"],
        "seed": o["seed"],
        "num_replicas": o["replicas"],
        **extra,
    }
    if o["group"]:
        keywords |= {"group_by": "experiment", "leaky": o["leaky"]}
    if o["stratify"]:
        keywords["stratify_by"] = "condition"
    if o["temporal"] is not None:
        keywords |= {"temporal_window": WINDOW, "temporal_fraction": o["temporal"]}
    return [BatchSampler(table, rank=r, **keywords) for r in range(o["replicas"])]


def parts(o: dict[str, Any]) -> list[tuple[str, int]]:
    """The documented per-batch counts: (part, anchors) for main and leak."""
    leak = half_up(o["batch_size"] * o["leaky"]) if o["group"] else 0
    return [("main", o["batch_size"] - leak), ("leak", leak)]


@settings(max_examples=40, deadline=None)
@given(o=options)
def test_batch_composition_within_tolerance(o: dict[str, Any]) -> None:
    (_, main), (_, leak) = parts(o)
    assume(main > leak)  # the batch's own group is then its most frequent one
    table = anchor_table(o["seed"] % 1000, groups=o["groups"], strata=o["strata"])
    samplers = build(table, o, replacement=True, batches_per_epoch=60)
    batches = samplers[0].global_batches()
    assert batches.shape == (len(samplers[0]) * o["replicas"], o["batch_size"])
    anchor = table["anchor"].to_numpy()
    group = table["experiment"].cat.codes.to_numpy()
    stratum = table["condition"].cat.codes.to_numpy()
    window_rows = inside(table, np.arange(len(table)))
    assert anchor[batches].all()
    main_groups = []
    for batch in batches:
        if o["group"]:
            main_group = Counter(group[batch].tolist()).most_common(1)[0][0]
            main_groups.append(main_group)
            main_pool = group == main_group
        else:
            main_pool = np.ones(len(table), dtype=bool)
        in_main = main_pool[batch]
        window = window_rows[batch]
        for (_, count), in_part, pool in zip(
            parts(o), (in_main, ~in_main), (main_pool, ~main_pool), strict=True
        ):
            if o["temporal"] is None:
                cells = [(np.ones(len(batch), dtype=bool), np.ones(len(table), dtype=bool), count)]
            else:
                inner = half_up(count * o["temporal"])
                cells = [(window, window_rows, inner), (~window, ~window_rows, count - inner)]
            for in_window, window_pool, expected in cells:
                cell = in_part & in_window
                # exactly round(part * fraction) in the window, the rest outside, per part
                assert cell.sum() == expected
                if o["stratify"] and expected:
                    # equal shares among the strata present in the pool this cell draws from
                    present = np.unique(stratum[pool & window_pool & anchor])
                    assert set(stratum[batch][cell].tolist()) <= set(present.tolist())
                    for s in present:
                        assert abs(np.sum(stratum[batch][cell] == s) - expected / len(present)) < 2
    if o["group"]:
        # groups take batches in proportion to their anchors (largest remainder)
        weights = np.bincount(group[anchor], minlength=o["groups"])
        quota = len(batches) * weights / weights.sum()
        taken = np.bincount(main_groups, minlength=o["groups"])
        assert np.all(np.abs(taken - quota) < 1 + 1e-9)


@settings(max_examples=40, deadline=None)
@given(o=options)
def test_ranks_are_disjoint_and_equal_without_replacement(o: dict[str, Any]) -> None:
    table = anchor_table(o["seed"] % 1000, groups=o["groups"], strata=o["strata"], rows=1500)
    try:
        samplers = build(table, o)
    except SamplerError as error:
        refusal: str | None = str(error)
    else:
        refusal = None
    if refusal is not None:
        # a composition the anchors cannot fill once without repeats is refused, by name
        assert "replacement=False" in refusal
        return
    lengths = {len(s) for s in samplers}
    assert len(lengths) == 1
    assert lengths.pop() >= 1
    drawn = []
    for sampler in samplers:
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(
            len(b) == o["batch_size"] and all(isinstance(i, int) for i in b) for b in batches
        )
        drawn.extend(i for b in batches for i in b)
    assert len(drawn) == len(set(drawn))  # no anchor twice in the epoch, on any rank
    assert table["anchor"].to_numpy()[drawn].all()
    # twice the default epoch does not fit without repeats, and is refused by name
    global_batches = len(samplers[0]) * o["replicas"]
    with pytest.raises(SamplerError, match=r"batches_per_epoch=\d+ with replacement=False"):
        build(table, o, batches_per_epoch=2 * global_batches + 2 * o["replicas"])


def test_default_epoch_without_composition_uses_every_full_batch() -> None:
    table = anchor_table(0, rows=1000, anchor_fraction=1.0)
    for replicas in (1, 2, 3):
        samplers = [
            BatchSampler(table, batch_size=64, seed=0, num_replicas=replicas, rank=r)
            for r in range(replicas)
        ]
        assert all(len(s) == (1000 // 64) // replicas for s in samplers)
    padded = [
        BatchSampler(table, batch_size=64, seed=0, num_replicas=2, rank=r, drop_last=False)
        for r in range(2)
    ]
    assert [len(s) for s in padded] == [8, 8]  # 15 batches padded to 16 with the first one
    assert padded[0].global_batches()[15].tolist() == padded[0].global_batches()[0].tolist()


def test_default_epoch_is_the_longest_the_composition_allows() -> None:
    # three groups of 300 anchors, 32 per batch: 9 batches each, a 28th would need a 10th
    table = pd.DataFrame(
        {
            "experiment": pd.Categorical(np.repeat(["a", "b", "c"], 300)),
            "condition": pd.Categorical(np.tile(np.repeat(["x", "y"], [210, 90]), 3)),
            "anchor": True,
        }
    )
    assert len(BatchSampler(table, batch_size=32, group_by="experiment", seed=0)) == 27
    with pytest.raises(
        SamplerError,
        match=r"needs 28 batches of 32 without repeating an anchor, but at most 27 fit",
    ):
        BatchSampler(table, batch_size=32, group_by="experiment", seed=0, batches_per_epoch=28)
    # stratified 630/270 anchors, 10 + 10 per batch: the 270 run out after 27 batches
    assert len(BatchSampler(table, batch_size=20, stratify_by="condition", seed=0)) == 27
    # 70 % / 30 %: 14 + 6 per batch, both run out after 45 batches
    fractions = {"x": 0.7, "y": 0.3}
    sampler = BatchSampler(
        table, batch_size=20, stratify_by="condition", stratify_fractions=fractions, seed=0
    )
    assert len(sampler) == 45
    condition = table["condition"].to_numpy()
    assert all(np.sum(condition[b] == "x") == 14 for b in sampler.batches())


def test_with_replacement_every_anchor_is_used_before_any_repeats() -> None:
    table = anchor_table(1, rows=100, anchor_fraction=1.0)
    sampler = BatchSampler(table, batch_size=10, batches_per_epoch=25, replacement=True, seed=3)
    assert len(sampler) == 25
    uses = np.bincount(sampler.global_batches().ravel(), minlength=100)
    assert set(uses.tolist()) <= {2, 3}
    assert uses.sum() == 250
    assert all(len(set(b)) == 10 for b in sampler)  # no anchor twice in one batch
    assert len(BatchSampler(table, batch_size=30, replacement=True, seed=0)) == 3


def test_reproducible_from_seed_and_epoch() -> None:
    table = anchor_table(2)
    keywords: dict[str, Any] = {
        "batch_size": 32,
        "group_by": "experiment",
        "leaky": 0.2,
        "stratify_by": "condition",
        "temporal_window": WINDOW,
        "temporal_fraction": 0.4,
        "seed": 11,
        "num_replicas": 2,
        "rank": 1,
    }
    first, second = (
        BatchSampler(table, **keywords),
        BatchSampler(SimpleNamespace(table=table), **keywords),
    )
    assert list(first) == list(second)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0
    assert sorted(map(sorted, list(first))) != sorted(map(sorted, epoch0))
    first.set_epoch(0)
    assert list(first) == epoch0
    other_seed = BatchSampler(table, **{**keywords, "seed": 12})
    assert list(other_seed) != epoch0


def test_lightning_reaches_set_epoch_through_a_dataloader() -> None:
    table = anchor_table(3, rows=600)
    sampler = BatchSampler(table, batch_size=16, group_by="experiment", seed=0)
    loader = DataLoader(range(len(table)), batch_sampler=sampler)
    assert len(loader) == len(sampler)
    _set_sampler_epoch(loader, 4)  # what Lightning's fit loop calls each epoch
    assert sampler.epoch == 4
    loaded = [batch for batch in loader]
    assert all(isinstance(b, torch.Tensor) for b in loaded)
    assert [b.tolist() for b in loaded] == sampler.batches().tolist()


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, found 0"),
        ({"batch_size": 2.5}, r"batch_size must be an integer >= 1, found 2\.5"),
        ({"batches_per_epoch": 0}, r"batches_per_epoch must be an integer >= 1, found 0"),
        ({"seed": -1}, r"seed must be an integer >= 0, found -1"),
        ({"num_replicas": 0}, r"num_replicas must be an integer >= 1, found 0"),
        ({"num_replicas": 2, "rank": 2}, r"rank 2 must lie in \[0, num_replicas=2\)"),
        ({"replacement": "yes"}, r"replacement must be True or False, found 'yes'"),
        ({"drop_last": 1}, r"drop_last must be True or False, found 1"),
        ({"group_by": "plate"}, r"group_by='plate' is not a column of the cell index; columns: \["),
        (
            {"stratify_by": "y"},
            r"stratify_by='y' must name a categorical column .* found dtype float32",
        ),
        (
            {"group_by": "experiment", "leaky": 1.5},
            r"leaky must be a fraction in \[0, 1\], found 1\.5",
        ),
        (
            {"group_by": "experiment", "leaky": -0.1},
            r"leaky must be a fraction in \[0, 1\], found -0\.1",
        ),
        ({"leaky": 0.2}, r"leaky=0\.2 needs group_by"),
        (
            {"group_by": "single", "leaky": 0.2},
            r"leaky=0\.2 needs at least two groups in group_by='single', found \['only'\]",
        ),
        (
            {"temporal_window": (5, 9), "temporal_fraction": 1.2},
            r"temporal_fraction must be a fraction in \[0, 1\], found 1\.2",
        ),
        ({"temporal_window": (5, 9)}, r"temporal_window and temporal_fraction go together"),
        ({"temporal_fraction": 0.5}, r"temporal_window and temporal_fraction go together"),
        (
            {"temporal_window": (9, 5), "temporal_fraction": 0.5},
            r"temporal_window=\(9, 5\) is empty or negative",
        ),
        (
            {"temporal_window": (1.5, 5), "temporal_fraction": 0.5},
            r"temporal_window must be two integer frames \(t0, t1\), found \(1\.5, 5\)",
        ),
        (
            {"temporal_window": (500, 600), "temporal_fraction": 0.5},
            r"no anchor with t inside \[500, 600\], but each batch of that group draws 16 there",
        ),
        (
            {"group_by": "experiment", "temporal_window": (0, 29), "temporal_fraction": 0.5},
            r"no anchor with experiment='exp2', t inside \[0, 29\], but each batch of that group "
            r"draws 16 there",
        ),
        (
            {"stratify_by": "condition", "stratify_fractions": {"cond0": 0.7, "cond1": 0.5}},
            r"stratify_fractions must sum to 1, found 1\.2",
        ),
        (
            {"stratify_by": "condition", "stratify_fractions": {"cond0": 1.5, "cond1": -0.5}},
            r"stratify_fractions\['cond0'\] must be a fraction in \[0, 1\], found 1\.5",
        ),
        (
            {"stratify_by": "condition", "stratify_fractions": {"cond0": 0.5, "mock": 0.5}},
            r"stratify_fractions names \['mock'\], which are not values of 'condition'",
        ),
        (
            {"stratify_by": "condition", "stratify_fractions": {"cond0": 1.0}},
            r"stratify_fractions must name every value of 'condition' among the anchors; missing \['cond1'\]",
        ),
        ({"stratify_fractions": {"cond0": 1.0}}, r"stratify_fractions needs stratify_by"),
        (
            {"batch_size": 5000},
            r"replacement=False: batch_size=5000 is larger than the pool of \d+ valid anchors",
        ),
        (
            {"batches_per_epoch": 500, "batch_size": 64},
            r"batches_per_epoch=500 with replacement=False needs 500 batches of 64 without "
            r"repeating an anchor, but at most \d+ fit",
        ),
        (
            {"stratify_by": "rare", "batch_size": 64},
            r"replacement=False: not one batch of batch_size=64 fits the composition: "
            r"rare='yes' has 3 anchors but 1 batch\(es\) take 32 from it",
        ),
        (
            {"batches_per_epoch": 1, "num_replicas": 2},
            r"batches_per_epoch=1 gives no batch to each of num_replicas=2 ranks with drop_last=True",
        ),
    ],
)
def test_bad_options(keywords: dict[str, Any], message: str) -> None:
    table = anchor_table(4, rows=2000)
    table["single"] = pd.Categorical(["only"] * len(table))
    table["rare"] = pd.Categorical(np.where(np.arange(len(table)) < 3, "yes", "no"))
    table.loc[:2, "anchor"] = True
    table.loc[table["experiment"] == "exp2", "t"] = 35
    with pytest.raises(SamplerError, match=message):
        BatchSampler(table, **{"batch_size": 32, "seed": 0, **keywords})


def test_bad_index() -> None:
    table = anchor_table(5, rows=100)
    with pytest.raises(
        SamplerError, match=r"index must be a pandas DataFrame or have a \.table DataFrame"
    ):
        BatchSampler([1, 2, 3], batch_size=4, seed=0)
    with pytest.raises(
        SamplerError, match=r"no 'anchor' column \(valid anchors\); columns found: \["
    ):
        BatchSampler(table.drop(columns="anchor"), batch_size=4, seed=0)
    with pytest.raises(SamplerError, match=r"column 'anchor' must be bool, found dtype int64"):
        BatchSampler(table.assign(anchor=1), batch_size=4, seed=0)
    with pytest.raises(SamplerError, match=r"no valid anchors: none of the 100 rows"):
        BatchSampler(table.assign(anchor=False), batch_size=4, seed=0)
    with pytest.raises(
        SamplerError, match=r"group_by='experiment' has missing values at \d+ anchor rows"
    ):
        BatchSampler(table.assign(experiment=None), batch_size=4, seed=0, group_by="experiment")
    sampler = BatchSampler(table, batch_size=4, seed=0)
    with pytest.raises(SamplerError, match=r"epoch must be an integer >= 0, found -1"):
        sampler.set_epoch(-1)


def test_sampler_on_a_built_index(cell_index: Any) -> None:
    sampler = BatchSampler(
        cell_index, batch_size=8, group_by="experiment", stratify_by="condition", seed=0
    )
    batches = sampler.batches()
    table = cell_index.table
    assert len(sampler) >= 1
    assert batches.shape == (len(sampler), 8)
    assert table["anchor"].to_numpy()[batches].all()
    assert len(np.unique(batches)) == batches.size
    experiment = table["experiment"].to_numpy()
    assert all(len(set(experiment[b])) == 1 for b in batches)
    condition = table["condition"].to_numpy()
    assert all(Counter(condition[b]) == {"infected": 4, "mock": 4} for b in batches)
