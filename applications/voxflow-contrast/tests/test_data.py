"""The crop dataset, the pair sampler and the Lightning data module.

References: crops against zarr-python's reading of the plate arrays normalised with numpy;
positives against the lineage columns of the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

from voxflow_contrast.data import (
    ContrastDataModule,
    DataError,
    PairBatchSampler,
    PairDataset,
    check_index_current,
)
from voxflow_contrast.errors import CellIndexError, SamplerError
from voxflow_contrast.experiments import (
    Experiment,
    ExperimentsConfig,
    load_experiments,
    register_experiments,
)
from voxflow_contrast.index import CellIndex, build_index, normalization_frames
from voxflow_contrast.positives import LineageArrays
from voxflow_contrast.sampler import BatchSampler, SamplerConfig
from voxflow_utils import loader_start_method

OPTIONS: dict[str, Any] = {"patch_size": (16, 16), "border": "shift", "max_shift": 4, "tau": (1, 2)}
COMMON = ["phase", "reporter"]


class Pairs(SimpleNamespace):
    config: ExperimentsConfig
    index: CellIndex
    experiments: list[Experiment]
    root: Path


@pytest.fixture(scope="module")
def pairs(
    tmp_path_factory: pytest.TempPathFactory,
    write_experiment: Callable[..., dict[str, Any]],
    write_yaml: Callable[[Path, Any], Path],
) -> Pairs:
    """Two experiments (exp2's plate lists its channels reversed: GFP-like first), built once."""
    root = tmp_path_factory.mktemp("pairs")
    first = write_experiment(root, "exp1", seed=0)
    second = write_experiment(root, "exp2", seed=1, channel_names=("RFP", "Phase"))
    second["channels"] = {"Phase": "phase", "RFP": "reporter"}
    path = write_yaml(
        root / "experiments.yaml", {"channels": COMMON, "experiments": [first, second]}
    )
    config = load_experiments(path)
    index = build_index(config, cache_dir=root / "cache", progress=False, **OPTIONS)
    return Pairs(config=config, index=index, experiments=register_experiments(config), root=root)


def plate_array(config: ExperimentsConfig, experiment: str, key: str) -> np.ndarray:
    """The whole ``(T, C, Z, Y, X)`` field image, read by zarr-python."""
    spec = next(s for s in config.experiments if s.name == experiment)
    return np.asarray(zarr.open_array(Path(spec.plate) / key / "0", mode="r"))


def plate_channels(config: ExperimentsConfig, experiment: str) -> list[int]:
    """Plate channel position of each common channel, from the plate's own metadata."""
    spec = next(s for s in config.experiments if s.name == experiment)
    metadata = json.loads((Path(spec.plate) / "A/1/0/zarr.json").read_text())
    labels = [c["label"] for c in metadata["attributes"]["ome"]["omero"]["channels"]]
    by_common = {common: plate for plate, common in spec.channels.items()}
    return [labels.index(by_common[c]) for c in COMMON]


def reference_crop(
    config: ExperimentsConfig, row: pd.Series, crop: tuple[int, int], z_window: int = 1
) -> np.ndarray:
    """``(C, Z, Y, X)`` float64: the row's window cut from the zarr array, normalised with
    numpy's mean and std over the whole frames at ``normalization_frames(T)``."""
    image = plate_array(config, str(row.experiment), f"{row.well}/{row.fov}")
    frames, _, depth, _, _ = image.shape
    channels = plate_channels(config, str(row.experiment))
    z0 = min(max(math.floor(row.z) - z_window // 2, 0), depth - z_window)
    y0 = math.floor(row.y) - crop[0] // 2
    x0 = math.floor(row.x) - crop[1] // 2
    out = []
    for channel in channels:
        stats = image[normalization_frames(frames), channel].astype(np.float64)
        window = image[
            int(row.t), channel, z0 : z0 + z_window, y0 : y0 + crop[0], x0 : x0 + crop[1]
        ]
        out.append((window - stats.mean()) / stats.std())
    return np.stack(out)


def stream(sampler: PairBatchSampler) -> list[tuple[list[int], list[int]]]:
    return [(a.tolist(), p.tolist()) for a, p in sampler]


def pair_sampler(
    index: CellIndex, *, seed: int = 0, decay: float = 0.5, **options: Any
) -> PairBatchSampler:
    options = {"batch_size": 8, "seed": seed, **options}
    anchors = BatchSampler(index, **options)
    return PairBatchSampler(
        anchors, LineageArrays.from_table(index), tau=index.tau, decay=decay, seed=seed
    )


# --------------------------------------------------------------------------- crops
def test_crops_equal_the_plate_arrays_normalised_by_hand(pairs: Pairs) -> None:
    dataset = PairDataset(pairs.index, pairs.experiments)
    table = pairs.index.table
    rng = np.random.default_rng(0)
    anchors = rng.choice(len(table), 12, replace=False)
    positives = rng.choice(len(table), 12, replace=False)
    batch = dataset[(anchors, positives)]
    assert batch["anchor"].shape == (12, 2, 1, 16, 16)
    assert batch["anchor"].dtype == batch["positive"].dtype == torch.float32
    for name, rows in (("anchor", anchors), ("positive", positives)):
        for number, row in enumerate(rows):
            expected = reference_crop(pairs.config, table.iloc[row], (16, 16))
            np.testing.assert_allclose(batch[name][number].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert batch["anchor_row"].tolist() == anchors.tolist()
    assert batch["positive_row"].tolist() == positives.tolist()
    t = table["t"].to_numpy()
    assert batch["tau"].tolist() == (t[positives] - t[anchors]).tolist()
    assert batch["tau"].dtype == batch["anchor_row"].dtype == torch.int64


def test_channels_follow_the_common_order_whatever_the_plate_order(
    tmp_path: Path,
    write_experiment: Callable[..., dict[str, Any]],
    write_yaml: Callable[[Path, Any], Path],
) -> None:
    # plate channels [GFP, DAPI, Phase3D]: phase is plate channel 2, reporter plate channel 0
    entry = write_experiment(
        tmp_path, "three", shape=(8, 3, 1, 64, 64), channel_names=("GFP", "DAPI", "Phase3D")
    )
    entry["channels"] = {"Phase3D": "phase", "GFP": "reporter"}
    config = load_experiments(
        write_yaml(tmp_path / "e.yaml", {"channels": COMMON, "experiments": [entry]})
    )
    index = build_index(config, cache_dir=tmp_path / "cache", progress=False, **OPTIONS)
    dataset = PairDataset(index, register_experiments(config))
    assert plate_channels(config, "three") == [2, 0]
    rows = np.arange(0, len(index.table), 7)
    crops = dataset.crops(rows)
    for number, row in enumerate(rows):
        expected = reference_crop(config, index.table.iloc[row], (16, 16))
        np.testing.assert_allclose(crops[number].numpy(), expected, rtol=1e-5, atol=1e-5)
    # a subset of the channels, in the order asked for
    reporter = PairDataset(index, register_experiments(config), channels=["reporter"])
    np.testing.assert_array_equal(reporter.crops(rows).numpy(), crops[:, 1:2].numpy())


def test_z_window_is_centred_and_clamped_inside_the_stack(
    single_field_yaml: Callable[..., Path],
) -> None:
    table = pd.DataFrame(
        {
            "track_id": [1, 1, 1, 1, 1],
            "t": [0, 1, 2, 3, 4],
            "z": [0.0, 1.6, 2.0, 3.9, 4.0],
            "y": [30.0] * 5,
            "x": [30.0] * 5,
        }
    )
    config = load_experiments(single_field_yaml(table, shape=(8, 2, 5, 64, 64)))
    index = build_index(config, progress=False, **OPTIONS)
    dataset = PairDataset(index, register_experiments(config), z_window=3)
    crops = dataset.crops(np.arange(5))
    assert crops.shape == (5, 2, 3, 16, 16)
    image = plate_array(config, "solo", "A/1/0")
    channels = plate_channels(config, "solo")
    for number, first in enumerate([0, 0, 1, 2, 2]):  # floor(z) - 1, clamped to [0, Z - 3]
        expected = reference_crop(config, index.table.iloc[number], (16, 16), z_window=3)
        np.testing.assert_allclose(crops[number].numpy(), expected, rtol=1e-5, atol=1e-5)
        window = image[number, channels[0], first : first + 3, 22:38, 22:38]
        stats = image[normalization_frames(8), channels[0]].astype(np.float64)
        np.testing.assert_allclose(
            crops[number, 0].numpy(), (window - stats.mean()) / stats.std(), rtol=1e-5, atol=1e-5
        )
    with pytest.raises(DataError, match=r"A/1/0: z_window=6 is larger than the field's 5 slices"):
        PairDataset(index, register_experiments(config), z_window=6)


# --------------------------------------------------------------------------- pairs
def test_positives_are_deterministic_per_epoch_and_change_across_epochs(pairs: Pairs) -> None:
    first = pair_sampler(pairs.index, group_by="experiment")
    again = pair_sampler(pairs.index, group_by="experiment")
    assert stream(first) == stream(again) == stream(first)
    first.set_epoch(1)
    assert first.batch_sampler.epoch == 1
    assert stream(first) != stream(again)
    again.set_epoch(1)
    assert stream(first) == stream(again)
    other_seed = pair_sampler(pairs.index, group_by="experiment", seed=1)
    assert stream(other_seed) != stream(pair_sampler(pairs.index, group_by="experiment"))


def test_positives_are_lineage_valid(pairs: Pairs) -> None:
    table = pairs.index.table
    sampler = pair_sampler(pairs.index, replacement=True, batches_per_epoch=40)
    low, high = pairs.index.tau
    parent = dict(zip(table["track_uid"], table["parent_uid"], strict=True))
    seen = crossed = 0
    for anchors, positives in sampler:
        assert anchors.dtype == positives.dtype == np.int64
        assert table["anchor"].to_numpy()[anchors].all()
        tau = table["t"].to_numpy()[positives] - table["t"].to_numpy()[anchors]
        assert ((tau >= low) & (tau <= high)).all()
        assert (
            table["lineage"].to_numpy()[positives] == table["lineage"].to_numpy()[anchors]
        ).all()
        assert (table["fov_id"].to_numpy()[positives] == table["fov_id"].to_numpy()[anchors]).all()
        # the same track, or a descendant after a division (its track_uid's parent chain)
        for a, p in zip(anchors.tolist(), positives.tolist(), strict=True):
            chain, uid = [], int(table["track_uid"].iat[p])
            while uid >= 0:
                chain.append(uid)
                uid = int(parent[uid])
            assert int(table["track_uid"].iat[a]) in chain
            crossed += chain[0] != int(table["track_uid"].iat[a])
            seen += 1
    assert seen == 40 * 8
    assert crossed > 0  # some positives follow a division into a daughter


def test_len_and_the_resumable_stream(pairs: Pairs) -> None:
    sampler = pair_sampler(pairs.index)
    per_epoch = len(sampler)
    assert per_epoch == len(sampler.batch_sampler) > 3
    uninterrupted = stream(sampler)
    sampler.set_epoch(1)
    uninterrupted += stream(sampler)
    start = per_epoch - 2  # resume two batches before the end of epoch 0
    resumed = pair_sampler(pairs.index)
    resumed.position = lambda: start
    assert len(resumed) == per_epoch
    assert stream(resumed) == uninterrupted[start : start + per_epoch]
    dataset = PairDataset(pairs.index, pairs.experiments)
    assert len(DataLoader(dataset, sampler=resumed, batch_size=None)) == per_epoch
    assert resumed.sampler is resumed.batch_sampler


def test_workers_give_the_batches_of_the_main_process(pairs: Pairs) -> None:
    dataset = PairDataset(pairs.index, pairs.experiments)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(
            dataset,
            sampler=pair_sampler(pairs.index),
            batch_size=None,
            num_workers=workers,
            multiprocessing_context=loader_start_method() if workers else None,
        )
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1]) > 0
    for main, worker in zip(*batches, strict=True):
        assert main.keys() == worker.keys()
        for key in main:
            torch.testing.assert_close(main[key], worker[key], rtol=0, atol=0)


# --------------------------------------------------------------------------- the module
def module(pairs: Pairs, **options: Any) -> ContrastDataModule:
    sampler = SamplerConfig(
        batch_size=8, group_by="experiment", stratify_by="condition", decay=0.5, seed=3
    )
    options = {"val_split": "fov", "val_keys": ["exp1/A/1/1", "exp2/A/2/0"], **options}
    data = ContrastDataModule(pairs.config, pairs.index, sampler, **options)
    data.setup("fit")
    return data


def test_split_by_field_keeps_validation_out_of_training(pairs: Pairs) -> None:
    data = module(pairs)
    table = pairs.index.table
    keys = (
        table["experiment"].astype(str) + "/" + table["well"].astype(str) + "/"
        + table["fov"].astype(str)
    ).to_numpy()  # fmt: skip
    held = np.isin(keys, ["exp1/A/1/1", "exp2/A/2/0"])
    train_rows = np.concatenate([np.concatenate(pair) for pair in data.train_sampler()])
    assert not held[train_rows].any()
    validation = data.val_batches()
    val_rows = np.concatenate([np.concatenate(pair) for pair in validation])
    assert held[val_rows].all()
    # deterministic: the same pairs on every call, from a fresh module, and through the loader
    assert [(a.tolist(), p.tolist()) for a, p in validation] == [
        (a.tolist(), p.tolist()) for a, p in module(pairs).val_batches()
    ]
    loaded = [b["anchor_row"].tolist() for b in data.val_dataloader()]
    assert loaded == [a.tolist() for a, _ in validation]
    assert loaded == [b["anchor_row"].tolist() for b in data.val_dataloader()]


def test_split_by_experiment_and_by_fraction(pairs: Pairs) -> None:
    table = pairs.index.table
    by_experiment = module(pairs, val_split="experiment", val_keys=["exp2"])
    val_rows = np.concatenate([a for a, _ in by_experiment.val_batches()])
    assert set(table["experiment"].iloc[val_rows]) == {"exp2"}
    by_fraction = module(pairs, val_keys=None, val_fraction=0.25)
    assert len(by_fraction.val_keys) == 2  # round(0.25 * 8 fields)
    assert by_fraction.val_keys == module(pairs, val_keys=None, val_fraction=0.25).val_keys


def test_validation_batches_have_no_leak_or_temporal_window(pairs: Pairs) -> None:
    sampler = SamplerConfig(
        batch_size=8,
        group_by="experiment",
        leaky=0.25,
        temporal_window=(0, 3),
        temporal_fraction=0.5,
        replacement=True,
    )
    data = ContrastDataModule(
        pairs.config,
        pairs.index,
        sampler,
        val_split="fov",
        val_keys=["exp1/A/1/1", "exp1/A/2/0", "exp2/A/1/0", "exp2/A/2/1"],
    )
    data.setup("fit")
    experiment = pairs.index.table["experiment"].astype(str).to_numpy()
    train = list(data.train_sampler())
    assert any(len(set(experiment[a])) == 2 for a, _ in train)  # training batches leak
    validation = data.val_batches()
    assert validation
    for anchors, _ in validation:
        assert len(set(experiment[anchors])) == 1  # validation batches do not
    rows = np.concatenate([a for a, _ in validation])
    assert len(set(rows.tolist())) == len(rows)  # without replacement


def test_ranks_get_disjoint_training_and_validation_anchors(pairs: Pairs) -> None:
    data = module(pairs)
    train, validation = [], []
    for rank in (0, 1):
        data.trainer = SimpleNamespace(  # type: ignore[assignment]
            global_rank=rank, world_size=2, global_step=0, accumulate_grad_batches=1
        )
        train.append(np.concatenate([a for a, _ in data.train_dataloader().sampler]))
        validation.append(np.concatenate([a for a, _ in data.val_batches()]))
    for parts in (train, validation):
        assert len(parts[0]) == len(parts[1]) > 0
        assert not set(parts[0].tolist()) & set(parts[1].tolist())


class Recorder(pl.LightningModule):
    """Records the rows it trains and validates on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.trained: list[list[int]] = []
        self.validated: list[list[int]] = []

    def training_step(self, batch: dict[str, torch.Tensor], number: int) -> torch.Tensor:
        assert batch["anchor"].shape[1:] == (2, 1, 16, 16)
        self.trained.append(batch["anchor_row"].tolist())
        return (self.weight * (batch["anchor"] - batch["positive"]).abs().mean()).sum()

    def validation_step(self, batch: dict[str, torch.Tensor], number: int) -> None:
        self.validated.append(batch["anchor_row"].tolist())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_trains_on_the_stream_across_epochs(pairs: Pairs) -> None:
    data = module(pairs)
    per_epoch = len(data.train_sampler())
    steps = per_epoch + 3
    recorder = Recorder()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(recorder, datamodule=data)
    expected = data.train_sampler()
    assert recorder.trained == [expected.pair(n)[0].tolist() for n in range(steps)]
    validation = [a.tolist() for a, _ in data.val_batches()]
    assert recorder.validated == validation  # one validation, at the end of epoch 0


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ((np.array([0, 1]), np.array([1, 10**6])), r"positive_rows: row 1000000 is not a row "
         r"position of the cell index \(expected 0 <= row < \d+\); 1 such row\(s\)"),
        ((np.array([-1]), np.array([1])), r"anchor_rows: row -1 is not a row position"),
        ((np.array([0.0, 1.0]), np.array([1, 2])), r"anchor_rows must be a non-empty 1-D array "
         r"of integer row positions, found a float64 array of shape \(2,\)"),
        ((np.array([], np.int64), np.array([], np.int64)), r"anchor_rows must be a non-empty"),
        ((np.array([0, 1]), np.array([1])), r"anchor_rows and positive_rows must have the same "
         r"length, found 2 and 1"),
        (np.array([0, 1]), r"a PairDataset item is a batch \(anchor_rows, positive_rows\), "
         r"found ndarray"),
        ((np.array([0]),), r"found tuple of length 1"),
    ],
)  # fmt: skip
def test_bad_batch_requests(pairs: Pairs, batch: Any, message: str) -> None:
    dataset = PairDataset(pairs.index, pairs.experiments)
    with pytest.raises(DataError, match=message):
        dataset[batch]


def test_an_index_of_other_experiments_is_refused(
    pairs: Pairs, experiments_config: ExperimentsConfig
) -> None:
    others = register_experiments(experiments_config)  # the conftest's exp1/exp2 elsewhere
    renamed = [e for e in others if e.spec.name == "exp1"]
    with pytest.raises(
        CellIndexError,
        match=r"the cell index names field\(s\) \['exp2/A/1/0', 'exp2/A/1/1', 'exp2/A/2/0', "
        r"'exp2/A/2/1'\] \(4 in all\) that the experiments do not register",
    ):
        PairDataset(pairs.index, renamed)
    with pytest.raises(DataError, match=r"experiments must be the list register_experiments "):
        PairDataset(pairs.index, pairs.experiments[0])  # type: ignore[arg-type]


def test_a_crop_that_leaves_the_image_names_the_field_and_row(pairs: Pairs) -> None:
    table = pairs.index.table
    starts = np.floor(table[["y", "x"]].to_numpy()) - 16  # a 32 x 32 crop in a 64 x 64 image
    row = int(np.flatnonzero(((starts < 0) | (starts + 32 > 64)).any(axis=1))[0])
    experiment, well, fov = (table[c].iat[row] for c in ("experiment", "well", "fov"))
    field = f"{experiment}.ome.zarr/{well}/{fov}"
    with pytest.raises(
        DataError,
        match=rf"{field}: the crop of row {row} \(t {table['t'].iat[row]}, centre y .*\) starts at "
        r"\(y, x\) = .* with size \(32, 32\) and leaves the image of \(T, Y, X\) = \(8, 64, 64\); "
        r"\d+ row\(s\) do so \(use a crop no larger than the index's patch_size \(16, 16\)\)",
    ):
        PairDataset(pairs.index, pairs.experiments, crop=(32, 32))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"z_window": 0}, DataError, r"z_window must be an integer >= 1, found 0"),
        ({"crop": (16,)}, DataError, r"crop must be \(Y, X\) pixels, found \(16,\)"),
        ({"crop": (16, 2.5)}, DataError, r"crop\[1\] must be an integer >= 1, found 2\.5"),
        ({"channels": ["phase", "dapi"]}, DataError, r"channels \['phase', 'dapi'\] must be "
         r"distinct channels of the index \['phase', 'reporter'\]; unknown: \['dapi'\]"),
        ({"channels": "phase"}, DataError, r"channels must be a non-empty list of names"),
    ],
)  # fmt: skip
def test_bad_dataset_options(
    pairs: Pairs, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PairDataset(pairs.index, pairs.experiments, **options)


def test_bad_pair_sampler_arguments(pairs: Pairs) -> None:
    anchors = BatchSampler(pairs.index, batch_size=8, seed=0)
    lineage = LineageArrays.from_table(pairs.index)
    good: dict[str, Any] = {"tau": (1, 2), "decay": 0.0, "seed": 0}
    with pytest.raises(SamplerError, match=r"batch_sampler must be a voxflow_contrast "):
        PairBatchSampler([[0, 1]], lineage, **good)  # type: ignore[arg-type]
    with pytest.raises(SamplerError, match=r"lineage_arrays must be LineageArrays\.from_table"):
        PairBatchSampler(anchors, pairs.index.table, **good)  # type: ignore[arg-type]
    with pytest.raises(SamplerError, match=r"tau must be \(tau_min, tau_max\) frames, found 2"):
        PairBatchSampler(anchors, lineage, **{**good, "tau": 2})
    with pytest.raises(SamplerError, match=r"tau"):
        PairBatchSampler(anchors, lineage, **{**good, "tau": (-1, 2)})
    with pytest.raises(SamplerError, match=r"decay must be a finite real number >= 0, found -1"):
        PairBatchSampler(anchors, lineage, **{**good, "decay": -1})
    with pytest.raises(SamplerError, match=r"seed must be an integer >= 0, found -3"):
        PairBatchSampler(anchors, lineage, **{**good, "seed": -3})
    sampler = PairBatchSampler(anchors, lineage, **good, position=lambda: -1)
    with pytest.raises(SamplerError, match=r"position\(\) must return an integer >= 0, found -1"):
        next(iter(sampler))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_keys": None}, r"give exactly one of val_keys and val_fraction, found "
         r"val_keys=None, val_fraction=None"),
        ({"val_fraction": 0.5}, r"give exactly one of val_keys and val_fraction"),
        ({"val_keys": ["exp1/A/1/7"]}, r"val_keys \['exp1/A/1/7'\] must be distinct fields "
         r"\('experiment/row/column/fov'\) of the index; unknown: \['exp1/A/1/7'\]; the index has "
         r"\['exp1/A/1/0', "),
        ({"val_split": "experiment", "val_keys": ["exp3"]}, r"unknown: \['exp3'\]; the index "
         r"has \['exp1', 'exp2'\]"),
        ({"val_split": "experiment", "val_keys": ["exp1", "exp2"]}, r"val_split='experiment' "
         r"holds out \['exp1', 'exp2'\]: every one of the index's experiments \['exp1', 'exp2'\]; "
         r"nothing is left to train on"),
        ({"val_keys": None, "val_fraction": 1.5}, r"val_fraction must be a number in \(0, 1\), "
         r"found 1\.5"),
        ({"val_split": "well"}, r"val_split must be 'experiment' or 'fov', found 'well'"),
        ({"val_keys": "exp1/A/1/0"}, r"val_keys must be a non-empty list of fields"),
        ({"num_workers": -1}, r"num_workers must be an integer >= 0, found -1"),
        ({"val_batch_size": 0}, r"val_batch_size must be an integer >= 1, found 0"),
    ],
)  # fmt: skip
def test_bad_splits(pairs: Pairs, options: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        module(pairs, **options)


def test_validation_batches_larger_than_the_held_out_anchors(pairs: Pairs) -> None:
    data = module(pairs, val_batch_size=4096)
    with pytest.raises(
        SamplerError,
        match=r"validation batches \(\d+ anchors in \['exp1/A/1/1', 'exp2/A/2/0'\]\): "
        r"replacement=False: batch_size=4096 is larger than the pool",
    ):
        data.val_batches()


def test_a_plate_whose_channels_changed_since_the_index_was_built(
    experiments_config: ExperimentsConfig, cell_index: CellIndex
) -> None:
    experiments = register_experiments(experiments_config)
    check_index_current(experiments_config, experiments, cell_index)  # unchanged: passes
    plate = Path(experiments_config.experiments[0].plate)
    metadata_path = plate / "A/1/0/zarr.json"
    metadata = json.loads(metadata_path.read_text())
    channels = metadata["attributes"]["ome"]["omero"]["channels"]
    channels[0]["label"], channels[1]["label"] = channels[1]["label"], channels[0]["label"]
    metadata_path.write_text(json.dumps(metadata))
    sampler = SamplerConfig(batch_size=4)
    data = ContrastDataModule(
        experiments_config, cell_index, sampler, val_split="experiment", val_keys=["exp2"]
    )
    with pytest.raises(
        CellIndexError,
        match=rf"{cell_index.path}: the cell index does not describe the experiments as they "
        rf"are now \(changed: plate {plate}\); rebuild it \(voxflow-contrast build-index\)",
    ):
        data.setup("fit")


def test_common_channels_that_differ_from_the_index(
    experiments_config: ExperimentsConfig, cell_index: CellIndex
) -> None:
    reordered = experiments_config.model_copy(update={"channels": ["reporter", "phase"]})
    with pytest.raises(
        CellIndexError,
        match=r"the index has channels \['phase', 'reporter'\], the experiments file "
        r"\['reporter', 'phase'\]; rebuild the index",
    ):
        check_index_current(reordered, register_experiments(experiments_config), cell_index)


def test_a_sampler_column_the_index_lacks(pairs: Pairs) -> None:
    sampler = SamplerConfig(batch_size=8, group_by="plate")
    data = ContrastDataModule(
        pairs.config, pairs.index, sampler, val_split="experiment", val_keys=["exp2"]
    )
    data.setup("fit")
    with pytest.raises(
        SamplerError,
        match=r"sampler\.group_by='plate' is not a column of the cell index; columns: "
        r"\['experiment', 'well', 'fov', ",
    ):
        data.train_dataloader()


def test_setup_must_run_first(pairs: Pairs) -> None:
    sampler = SamplerConfig(batch_size=8)
    data = ContrastDataModule(
        pairs.config, pairs.index, sampler, val_split="experiment", val_keys=["exp2"]
    )
    with pytest.raises(DataError, match=r"ContrastDataModule\.setup\(\) has not run"):
        data.train_dataloader()
