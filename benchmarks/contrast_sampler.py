"""Contrastive sampling: batches of 256 anchors with positives, voxflow beside a per-item pandas
implementation (the style of the peer's triplet dataset) and a straightforward numpy reference.

Index: 1,000,000 observations, 10,000 cell slots x 100 frames in 4 experiments (2 wells each,
infected / mock), 50 fields of view; 30 % of the slot pairs hold a division (the mother
continues as one daughter in its slot, the other daughter takes over the second slot from a
cell that leaves), built as a DataFrame with the cell index's columns and dtypes. Positives:
tau in [1, 3] frames, decay 0.5. Optionally (``--build``) the same tracks are written as
Ultrack-style CSVs beside small OME-Zarr plates (64x64 pixels) and ``build_index`` is timed on
them (first build, then the cached reuse).

    uv run --group bench python benchmarks/contrast_sampler.py [--build] [--pandas-anchors 32]

Per option combination (none, group, group + leaky, stratify, temporal, all combined): the
voxflow sampler's whole epoch (templates planned at construction, "setup"), iterated as a
DataLoader would, with ``draw_positives`` on every batch; the numpy reference draws each batch
with boolean masks over the anchors and walks the lineage level by level for positives; the
pandas version filters the table per batch for the pools and per anchor for its positive
(timed on ``--pandas-anchors`` anchors and scaled to 256). Checks: the reference finds the same
number of positives as voxflow for 20,000 (anchor, tau) pairs, and every pandas positive is a
voxflow candidate (same lineage, frame t + tau, in the anchor's subtree).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voxflow_contrast.positives import LineageArrays, candidate_counts, draw_positives, has_positive
from voxflow_contrast.sampler import BatchSampler

SLOTS, FRAMES, FIELDS_PER_WELL = 10_000, 100, (6, 6, 6, 7)
CHANNELS = ("phase", "reporter")
TAU, DECAY, BATCH = (1, 3), 0.5, 256
WINDOW = (30, 59)
COMBINATIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "group": {"group_by": "experiment"},
    "group + leaky 0.2": {"group_by": "experiment", "leaky": 0.2},
    "stratify": {"stratify_by": "condition"},
    "temporal 0.5": {"temporal_window": WINDOW, "temporal_fraction": 0.5},
    "all combined": {
        "group_by": "experiment",
        "leaky": 0.2,
        "stratify_by": "condition",
        "temporal_window": WINDOW,
        "temporal_fraction": 0.5,
    },
}


def fields() -> list[tuple[str, str, str]]:
    """(experiment, well, field) of the 50 fields of view, in index order."""
    return [
        (f"exp{e}", well, str(f))
        for e, count in enumerate(FIELDS_PER_WELL)
        for well in ("A/1", "A/2")
        for f in range(count)
    ]


def make_tracks(seed: int = 0) -> pd.DataFrame:
    """Ultrack-style rows per field: fov_id, track_id, t, y, x, parent_track_id."""
    rng = np.random.default_rng(seed)
    per_field = SLOTS // len(fields())
    slot = np.repeat(np.arange(SLOTS), FRAMES)
    t = np.tile(np.arange(FRAMES), SLOTS)
    fov = slot // per_field
    pair = (slot % per_field) // 2
    second = slot % 2
    pairs = rng.random((len(fields()), per_field // 2)) < 0.3
    division = rng.integers(20, 80, (len(fields()), per_field // 2))
    divided = pairs[fov, pair] & (t >= division[fov, pair])
    own = 2 * pair + 1 + second
    return pd.DataFrame(
        {
            "fov_id": fov.astype(np.int32),
            "track_id": np.where(divided, 1000 + own, own),
            "t": t.astype(np.int32),
            "y": rng.uniform(0, 63, len(t)).astype(np.float32),
            "x": rng.uniform(0, 63, len(t)).astype(np.float32),
            "parent_track_id": np.where(divided, 2 * pair + 1, -1),
        }
    )


def make_index(tracks: pd.DataFrame) -> pd.DataFrame:
    """The cell index of ``tracks`` with the design's columns and dtypes (anchors for TAU)."""
    layout = fields()
    table = tracks.sort_values(["fov_id", "track_id", "t"], kind="stable").reset_index(drop=True)
    fov_id = table["fov_id"].to_numpy()
    key = fov_id.astype(np.int64) * 10_000 + table["track_id"].to_numpy()
    uids, track_uid = np.unique(key, return_inverse=True)
    parent_key = fov_id.astype(np.int64) * 10_000 + table["parent_track_id"].to_numpy()
    parent_uid = np.where(
        table["parent_track_id"].to_numpy() < 0, -1, np.searchsorted(uids, parent_key)
    )
    root = np.arange(len(uids))
    root[track_uid] = np.where(parent_uid >= 0, parent_uid, track_uid)  # one generation deep
    lineage = np.unique(root, return_inverse=True)[1][track_uid]
    experiment, well, field = (np.array([f[i] for f in layout])[fov_id] for i in range(3))
    conditions = {"A/1": "infected", "A/2": "mock"}
    index = pd.DataFrame(
        {
            "experiment": pd.Categorical(experiment),
            "well": pd.Categorical(well),
            "fov": pd.Categorical(field),
            "fov_id": fov_id.astype(np.int32),
            "track": table["track_id"].to_numpy(np.int64),
            "track_uid": track_uid.astype(np.int64),
            "parent_uid": parent_uid.astype(np.int64),
            "lineage": lineage.astype(np.int64),
            "t": table["t"].to_numpy(np.int32),
            "z": np.zeros(len(table), np.float32),
            "y": table["y"].to_numpy(np.float32),
            "x": table["x"].to_numpy(np.float32),
            "condition": pd.Categorical([conditions[w] for w in well]),
            "shifted": np.zeros(len(table), bool),
        }
    )
    for channel in CHANNELS:
        index[f"norm_mean_{channel}"] = np.float32(100.0)
        index[f"norm_std_{channel}"] = np.float32(10.0)
    arrays = LineageArrays.from_table(index)
    index["anchor"] = has_positive(arrays, np.arange(len(index)), *TAU)
    return index


# -- the numpy reference: masks per batch, lineage walked level by level ---------------------


class NumpyReference:
    """Each batch from boolean masks over the anchors; positives by walking tracks per level."""

    def __init__(self, table: pd.DataFrame, options: dict[str, Any], seed: int) -> None:
        self.options, self.rng = options, np.random.default_rng(seed)
        self.anchor = table["anchor"].to_numpy()
        self.group = table["experiment"].cat.codes.to_numpy()
        self.stratum = table["condition"].cat.codes.to_numpy()
        self.t = table["t"].to_numpy().astype(np.int64)
        self.track = table["track_uid"].to_numpy()
        parent = np.full(int(self.track.max()) + 1, -1)
        parent[self.track] = table["parent_uid"].to_numpy()
        self.parent = parent
        children = np.argsort(parent, kind="stable")
        self.children = children[parent[children] >= 0]
        self.child_start = np.searchsorted(parent[self.children], np.arange(len(parent)))
        self.child_count = np.bincount(parent[self.children], minlength=len(parent))
        self.keys = self.track * FRAMES + self.t
        self.order = np.argsort(self.keys)
        self.sorted_keys = self.keys[self.order]

    def batch(self) -> np.ndarray:
        o, rng = self.options, self.rng
        pool = self.anchor
        leak = int(np.floor(BATCH * o.get("leaky", 0.0) + 0.5))
        parts = [(pool, BATCH - leak)]
        if "group_by" in o:
            groups = np.bincount(self.group[pool])
            g = rng.choice(len(groups), p=groups / groups.sum())
            parts = [(pool & (self.group == g), BATCH - leak), (pool & (self.group != g), leak)]
        chosen = []
        for mask, count in parts:
            cells = [(mask, count)]
            if "temporal_window" in o:
                inside = (self.t >= WINDOW[0]) & (self.t <= WINDOW[1])
                inner = int(np.floor(count * o["temporal_fraction"] + 0.5))
                cells = [(mask & inside, inner), (mask & ~inside, count - inner)]
            for cell, n in cells:
                if "stratify_by" in o:
                    present = np.unique(self.stratum[cell])
                    shares = np.full(len(present), n // len(present))
                    shares[rng.choice(len(present), n % len(present), replace=False)] += 1
                    for s, k in zip(present, shares, strict=True):
                        chosen.append(
                            rng.choice(np.flatnonzero(cell & (self.stratum == s)), k, replace=False)
                        )
                elif n:
                    chosen.append(rng.choice(np.flatnonzero(cell), n, replace=False))
        return np.concatenate(chosen)

    def candidates(self, rows: np.ndarray, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query, row) pairs of every positive of each (anchor, tau) query."""
        target = self.t[rows] + taus
        query = np.arange(len(rows))
        track = self.track[rows]
        found_query, found_row = [], []
        while len(query):
            key = track * FRAMES + target[query]
            position = np.searchsorted(self.sorted_keys, key).clip(max=len(self.keys) - 1)
            hit = (
                (self.sorted_keys[position] == key)
                & (target[query] >= 0)
                & (target[query] < FRAMES)
            )
            found_query.append(query[hit])
            found_row.append(self.order[position[hit]])
            query, track = query[~hit], track[~hit]
            if taus[0] < 0:
                track = self.parent[track]
                query, track = query[track >= 0], track[track >= 0]
            else:  # the children of tracks not observed at the target frame
                counts = self.child_count[track]
                query = np.repeat(query, counts)
                offsets = np.arange(len(query)) - np.repeat(np.cumsum(counts) - counts, counts)
                track = self.children[np.repeat(self.child_start[track], counts) + offsets]
        return np.concatenate(found_query), np.concatenate(found_row)

    def positives(self, rows: np.ndarray) -> np.ndarray:
        offsets = np.arange(TAU[0], TAU[1] + 1)
        p = np.exp(-DECAY * np.abs(offsets))
        taus = self.rng.choice(offsets, len(rows), p=p / p.sum())
        query, row = self.candidates(rows, taus)
        missing = np.flatnonzero(np.bincount(query, minlength=len(rows)) == 0)
        if len(missing):  # the nearest offset with a positive, ties to the smaller |tau|
            available = np.stack(
                [
                    np.bincount(
                        self.candidates(rows[missing], np.full(len(missing), tau))[0],
                        minlength=len(missing),
                    )
                    > 0
                    for tau in offsets
                ],
                axis=1,
            )
            distance = np.abs(offsets[None, :] - taus[missing, None]) * 1000 + np.abs(offsets)
            taus[missing] = offsets[np.argmin(np.where(available, distance, 10**9), axis=1)]
            extra_query, extra_row = self.candidates(rows[missing], taus[missing])
            query = np.concatenate([query, missing[extra_query]])
            row = np.concatenate([row, extra_row])
        pick = np.lexsort((self.rng.random(len(query)), query))
        first = np.r_[True, query[pick][1:] != query[pick][:-1]]
        return row[pick][first]


# -- the pandas version: filters per batch and per anchor ------------------------------------


def pandas_batch(
    table: pd.DataFrame, options: dict[str, Any], anchors: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's pools by DataFrame filters, then a positive per anchor by filtering the table."""
    pool = table[table["anchor"]]
    leak = int(np.floor(BATCH * options.get("leaky", 0.0) + 0.5))
    parts = [(pool, BATCH - leak)]
    if "group_by" in options:
        g = pool["experiment"].sample(1, random_state=rng).iloc[0]
        parts = [
            (pool[pool["experiment"] == g], BATCH - leak),
            (pool[pool["experiment"] != g], leak),
        ]
    chosen = []
    for frame, count in parts:
        cells = [(frame, count)]
        if "temporal_window" in options:
            inside = frame["t"].between(*WINDOW)
            inner = int(np.floor(count * options["temporal_fraction"] + 0.5))
            cells = [(frame[inside], inner), (frame[~inside], count - inner)]
        for cell, n in cells:
            if "stratify_by" in options:
                groups = list(cell.groupby("condition", observed=True))
                for i, (_, members) in enumerate(groups):
                    k = n // len(groups) + (i < n % len(groups))
                    chosen.append(members.sample(k, random_state=rng).index.to_numpy())
            elif n:
                chosen.append(cell.sample(n, random_state=rng).index.to_numpy())
    batch = np.concatenate(chosen)[:anchors]
    offsets = np.arange(TAU[0], TAU[1] + 1)
    p = np.exp(-DECAY * np.abs(offsets))
    positives, taus = [], []
    for row in batch:
        drawn = int(rng.choice(offsets, p=p / p.sum()))
        for tau in sorted(offsets, key=lambda o, d=drawn: (abs(o - d), abs(o))):
            found = pandas_positive(table, int(row), int(tau), rng)
            if found is not None:
                positives.append(found)
                taus.append(tau)
                break
    return batch, np.array(positives), np.array(taus)


def pandas_positive(
    table: pd.DataFrame, row: int, tau: int, rng: np.random.Generator
) -> int | None:
    anchor = table.iloc[row]
    target = anchor["t"] + tau
    same = table[(table["track_uid"] == anchor["track_uid"]) & (table["t"] == target)]
    if len(same):
        return int(same.index[0])
    family = table[(table["lineage"] == anchor["lineage"]) & (table["t"] == target)]
    descendants = []
    for candidate, track in zip(family.index, family["track_uid"], strict=True):
        while track >= 0 and track != anchor["track_uid"]:
            track = table.loc[table["track_uid"] == track, "parent_uid"].iloc[0]
        if track == anchor["track_uid"]:
            descendants.append(int(candidate))
    return int(rng.choice(descendants)) if descendants else None


# -- timing ------------------------------------------------------------------------------------


def time_voxflow(
    table: pd.DataFrame, arrays: LineageArrays, options: dict[str, Any]
) -> dict[str, float]:
    """Setup; epoch draw per batch; positives per batch; a fresh epoch iterated with positives."""
    begin = time.perf_counter()
    sampler = BatchSampler(table, batch_size=BATCH, seed=0, **options)
    setup = time.perf_counter() - begin
    rng = np.random.default_rng(1)
    begin = time.perf_counter()
    sampler.batches()
    sampling = time.perf_counter() - begin
    fallbacks = 0
    begin = time.perf_counter()
    for batch in sampler:  # the epoch is drawn already: lists, then positives
        fallbacks += draw_positives(arrays, np.asarray(batch), *TAU, DECAY, rng)[2]
    positives = time.perf_counter() - begin
    sampler.set_epoch(1)  # a fresh epoch, its draw included, as a DataLoader iterates it
    begin = time.perf_counter()
    for batch in sampler:
        draw_positives(arrays, np.asarray(batch), *TAU, DECAY, rng)
    fresh = time.perf_counter() - begin
    return {
        "setup_s": setup,
        "batches": len(sampler),
        "sampling_ms": sampling / len(sampler) * 1e3,
        "positives_ms": positives / len(sampler) * 1e3,
        "ms": fresh / len(sampler) * 1e3,
        "fallback": fallbacks / (len(sampler) * BATCH),
    }


def time_reference(reference: NumpyReference, batches: int = 40) -> float:
    begin = time.perf_counter()
    for _ in range(batches):
        reference.positives(reference.batch())
    return (time.perf_counter() - begin) / batches * 1e3


def check_reference(table: pd.DataFrame, arrays: LineageArrays, reference: NumpyReference) -> None:
    rng = np.random.default_rng(2)
    rows = rng.choice(len(table), 20_000)
    for tau in (*range(TAU[0], TAU[1] + 1), -1, -3):
        taus = np.full(len(rows), tau)
        query, _ = reference.candidates(rows, taus)
        expected = np.bincount(query, minlength=len(rows))
        found = candidate_counts(arrays, rows, taus)
        if not np.array_equal(found, expected):
            raise SystemExit(f"tau {tau}: voxflow and the numpy reference disagree on positives")


def check_pandas(
    table: pd.DataFrame,
    arrays: LineageArrays,
    batch: np.ndarray,
    positives: np.ndarray,
    taus: np.ndarray,
) -> None:
    track, t = arrays.track, arrays.t
    lineage = table["lineage"].to_numpy()
    anchor_track, positive_track = track[batch], track[positives]
    inside = (arrays.tour_in[anchor_track] <= arrays.tour_in[positive_track]) & (
        arrays.tour_in[positive_track] < arrays.tour_out[anchor_track]
    )
    good = inside & (t[positives] == t[batch] + taus) & (lineage[positives] == lineage[batch])
    if not good.all() or len(positives) != len(batch):
        raise SystemExit("a pandas positive is not a voxflow candidate")


def write_inputs(root: Path, tracks: pd.DataFrame) -> Path:
    """Plates (64x64, noise) and Ultrack-style CSVs of ``tracks``; returns the YAML path."""
    import yaml

    from voxflow_io import create_plate

    layout = fields()
    rng = np.random.default_rng(3)
    entries = []
    for e, count in enumerate(FIELDS_PER_WELL):
        name = f"exp{e}"
        plate = create_plate(
            root / f"{name}.ome.zarr",
            wells=["A/1", "A/2"],
            fields=count,
            shape=(FRAMES, 2, 1, 64, 64),
            dtype="uint16",
            chunks=(FRAMES, 1, 1, 64, 64),
            channel_names=["Phase3D", "GFP"],
        )
        for position in plate.positions():
            writer = position.writer()
            writer.write_region(
                (0, 0, 0, 0, 0), rng.integers(0, 4096, (FRAMES, 2, 1, 64, 64), dtype=np.uint16)
            )
            writer.finish()
            fov_id = layout.index((name, position.well, position.field))
            folder = root / f"{name}_tracks" / position.row / position.column / position.field
            folder.mkdir(parents=True)
            rows = tracks[tracks["fov_id"] == fov_id].drop(columns="fov_id")
            rows.to_csv(folder / "tracks.csv", index=False)
        entries.append(
            {
                "name": name,
                "plate": str(root / f"{name}.ome.zarr"),
                "tracks_root": str(root / f"{name}_tracks"),
                "channels": {"Phase3D": "phase", "GFP": "reporter"},
                "conditions": {"A/1": "infected", "A/2": "mock"},
                "frame_interval_minutes": 30.0,
                "pixel_size_um": 0.325,
            }
        )
    path = root / "experiments.yaml"
    path.write_text(yaml.safe_dump({"channels": list(CHANNELS), "experiments": entries}))
    return path


def time_build(tracks: pd.DataFrame) -> None:
    from voxflow_contrast.experiments import load_experiments
    from voxflow_contrast.index import build_index

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        begin = time.perf_counter()
        config = load_experiments(write_inputs(root, tracks))
        written = time.perf_counter() - begin
        options = {"patch_size": (16, 16), "border": "shift", "max_shift": 8, "tau": TAU}
        begin = time.perf_counter()
        index = build_index(config, cache_dir=root / "cache", progress=False, **options)
        built = time.perf_counter() - begin
        begin = time.perf_counter()
        build_index(config, cache_dir=root / "cache", progress=False, **options)
        reused = time.perf_counter() - begin
        memory = index.table.memory_usage(deep=True).sum() / 2**20
        print(
            f"\nindex from CSVs: {len(index.table):,} rows, build {built:.1f} s (goal < 15 s), "
            f"cached reuse {reused:.1f} s, table {memory:.0f} MiB; writing the inputs took "
            f"{written:.1f} s (not counted)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="also time build_index on CSVs")
    parser.add_argument(
        "--pandas-anchors",
        type=int,
        default=32,
        help="anchors the pandas version draws per combination (scaled to 256)",
    )
    args = parser.parse_args()

    begin = time.perf_counter()
    tracks = make_tracks()
    table = make_index(tracks)
    made = time.perf_counter() - begin
    begin = time.perf_counter()
    arrays = LineageArrays.from_table(table)
    lookup = time.perf_counter() - begin
    memory = table.memory_usage(deep=True).sum() / 2**20
    arrays_memory = (
        sum(
            getattr(arrays, f).nbytes
            for f in (
                "track",
                "t",
                "parent",
                "tour_in",
                "tour_out",
                "track_keys",
                "track_rows",
                "tour_keys",
                "tour_rows",
            )
        )
        / 2**20
    )
    print(
        f"index: {len(table):,} observations, {table['track_uid'].nunique():,} tracks, "
        f"{int((table.groupby('track_uid')['parent_uid'].first() >= 0).sum()):,} daughters, "
        f"{table['lineage'].nunique():,} lineages, {int(table['anchor'].sum()):,} anchors for tau "
        f"{list(TAU)}; made in {made:.1f} s; DataFrame memory {memory:.0f} MiB (goal < 200); "
        f"lineage arrays {arrays_memory:.0f} MiB built in {lookup:.2f} s"
    )
    print(
        "\n| options | batches/epoch | setup s | sampling ms/batch | positives ms/batch | "
        "voxflow ms/batch | fallback % | numpy reference ms/batch | pandas ms/batch (est.) | "
        "reference / voxflow | pandas / voxflow |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    checked = False
    for label, options in COMBINATIONS.items():
        ours = time_voxflow(table, arrays, options)
        reference = NumpyReference(table, options, seed=4)
        if not checked:
            check_reference(table, arrays, reference)
            checked = True
        ref_ms = time_reference(reference)
        rng = np.random.default_rng(5)
        begin = time.perf_counter()
        batch, positives, taus = pandas_batch(table, options, args.pandas_anchors, rng)
        pandas_ms = (time.perf_counter() - begin) * BATCH / args.pandas_anchors * 1e3
        check_pandas(table, arrays, batch, positives, taus)
        print(
            f"| {label} | {ours['batches']} | {ours['setup_s']:.2f} | {ours['sampling_ms']:.3f} | "
            f"{ours['positives_ms']:.3f} | {ours['ms']:.3f} | {100 * ours['fallback']:.1f} | "
            f"{ref_ms:.1f} | {pandas_ms:,.0f} | {ref_ms / ours['ms']:.0f}x | "
            f"{pandas_ms / ours['ms']:,.0f}x |"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(
        f"\npeak resident memory {peak:.0f} MiB; goal: < 0.5 ms per batch of {BATCH} with positives"
    )
    if args.build:
        time_build(tracks)


if __name__ == "__main__":
    main()
