"""Arguments are checked at the entry points: never truncated, never a bare builtin error."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import zarr

import voxflow_io
from voxflow_io import (
    LevelOutOfRangeError,
    MetadataError,
    ParameterError,
    UnsupportedFormatError,
    VoxflowIOError,
    WindowError,
    create_ome_zarr,
    create_plate,
    discover_dataset,
    downsample,
    open_volume,
)

from .test_write import brute_force_mean

SOURCE = Path(voxflow_io.__file__).parent


def test_empty_path_is_not_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    zarr.create_array("here.zarr", shape=(2, 2), dtype="uint8")  # something "" could open
    for call in (
        lambda: open_volume(""),
        lambda: voxflow_io.open_plate(""),
        lambda: discover_dataset(""),
        lambda: create_ome_zarr("", shape=(2, 2), dtype="uint8", chunks=(2, 2), axes="yx"),
    ):
        with pytest.raises(ParameterError, match=r"is an empty string ''; pass the path"):
            call()


def test_float_shape_and_chunks_are_refused_not_truncated(tmp_path: Path) -> None:
    kwargs = {"dtype": "uint8", "axes": "yx"}
    with pytest.raises(
        MetadataError, match=r"a: shape \(10\.7, 8\) must hold integers; entry 0 is 10\.7 \(float\)"
    ):
        create_ome_zarr(tmp_path / "a", shape=(10.7, 8), chunks=(4, 4), **kwargs)
    with pytest.raises(MetadataError, match=r"entry 1 is 4\.0 \(float\)"):
        create_ome_zarr(tmp_path / "b", shape=(8, 8), chunks=(4, 4.0), **kwargs)
    with pytest.raises(MetadataError, match=r"levels must be an integer, found 2\.0 \(float\)"):
        create_ome_zarr(tmp_path / "c", shape=(8, 8), chunks=(4, 4), levels=2.0, **kwargs)
    with pytest.raises(MetadataError, match=r"factors must be integers >= 1.*\{'y': 1\.5\}"):
        create_ome_zarr(
            tmp_path / "d", shape=(8, 8), chunks=(4, 4), levels=2, downscale={"y": 1.5}, **kwargs
        )
    assert not list(tmp_path.iterdir())  # nothing was created


def test_float_start_and_bad_levels_in_write_region(tmp_path: Path) -> None:
    writer = create_ome_zarr(
        tmp_path / "i.ome.zarr", shape=(8, 8), dtype="uint8", chunks=(4, 4), axes="yx", levels=2
    )
    block = np.ones((4, 4), np.uint8)
    with pytest.raises(WindowError, match=r"start \(4\.9, 0\) must hold integers; entry 0 is 4\.9"):
        writer.write_region((4.9, 0), block)
    with pytest.raises(WindowError, match=r"start \(4\.0, 0\) must hold integers; entry 0 is 4\.0"):
        writer.write_region((4.0, 0), block)
    with pytest.raises(
        LevelOutOfRangeError, match=r"level -1 requested but the image has levels 0\.\.1"
    ):
        writer.write_region((0, 0), block, level=-1)
    with pytest.raises(
        LevelOutOfRangeError, match=r"level 5 requested but the image has levels 0\.\.1"
    ):
        writer.write_region((0, 0), block, level=5)
    with pytest.raises(ParameterError, match=r"data must be a numpy array, found list"):
        writer.write_region((0, 0), [[1]])
    writer.write_region((4, 4), block)
    writer.finish()
    expected = np.zeros((8, 8), np.uint8)
    expected[4:, 4:] = 1
    np.testing.assert_array_equal(open_volume(tmp_path / "i.ome.zarr")[:], expected)
    assert open_volume(tmp_path / "i.ome.zarr", level=1)[:].max() == 0  # coarsest untouched


def test_read_windows_and_slices_must_be_integers(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((4, 4), np.uint8))
    volume = open_volume(tmp_path / "v.npy")
    with pytest.raises(WindowError, match=r"start \(1\.0, 0\) must hold integers"):
        volume.read((1.0, 0), (2, 2))
    with pytest.raises(WindowError, match=r"must have integer bounds and step, found 0\.5"):
        volume[0.5:3]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"level": 1.0}, ParameterError, r"level must be an integer, found 1\.0 \(float\)"),
        ({"level": -1}, LevelOutOfRangeError, r"level -1 requested; levels are numbered from 0"),
        ({"series": -1}, MetadataError, r"series -1 requested; series are numbered from 0"),
        ({"key": ""}, ParameterError, r"key must be a non-empty string or None, found ''"),
        ({"axes": ["z", "y", "x"]}, ParameterError, r"axes must be a string of letters"),
        ({"allow_incomplete": "no"}, ParameterError, r"allow_incomplete must be True or False"),
        ({"max_decoded_bytes": 0}, ParameterError, r"max_decoded_bytes must be >= 1, found 0"),
    ],
)
def test_open_volume_arguments(
    tmp_path: Path, kwargs: dict, error: type[Exception], message: str
) -> None:
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(2, 2, 2), dtype="uint8")
    with pytest.raises(error, match=message):
        open_volume(tmp_path / "a.zarr", **kwargs)


def test_plate_of_unsupported_dtype_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(
        UnsupportedFormatError,
        match=r"plate\.ome\.zarr: dtype complex64 is not a numeric image type; expected bool, "
        r"int, uint or float",
    ):
        create_plate(
            tmp_path / "plate.ome.zarr",
            wells=["A/1"],
            fields=1,
            shape=(1, 1, 1, 4, 4),
            dtype="complex64",
            chunks=(1, 1, 1, 4, 4),
            channel_names=["DAPI"],
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": 1.5}, r"fields must be an integer, found 1\.5"),
        ({"wells": "A/1"}, r"wells must be a sequence \(tuple or list\), found str 'A/1'"),
        ({"shape": (1, 1, 1, 4.0, 4)}, r"shape \(1, 1, 1, 4\.0, 4\) must hold integers"),
        ({"channel_names": "DAPI"}, r"channel_names must be a sequence"),
        ({"wells": []}, r"wells is empty"),
    ],
)
def test_create_plate_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {
        "wells": ["A/1"],
        "fields": 1,
        "shape": (1, 1, 1, 4, 4),
        "dtype": "uint8",
        "chunks": (1, 1, 1, 4, 4),
        "channel_names": ["DAPI"],
        **kwargs,
    }
    with pytest.raises(MetadataError, match=message):
        create_plate(tmp_path / "plate.ome.zarr", **arguments)


def test_discover_dataset_arguments(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(ParameterError, match=r"targets must be a sequence .* found str 'ink'"):
        discover_dataset(tmp_path, targets="ink")
    with pytest.raises(ParameterError, match=r"allow_unlabeled must be True or False"):
        discover_dataset(tmp_path, allow_unlabeled="false")


def test_mean_downsampling_keeps_nan_like_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    block = rng.random((5, 7)).astype(np.float32)
    block[0, 0] = np.nan  # inside a full 2x2 block
    block[4, 6] = np.nan  # alone in the 1x1 corner edge block
    block[2, 3] = np.inf
    expected = brute_force_mean(block.astype(np.float64), (2, 2)).astype(np.float32)
    result = downsample(block, (2, 2), "mean")
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    assert np.isnan(result[0, 0])
    assert np.isnan(result[2, 3])
    assert np.isinf(result[1, 1])
    # Edge blocks average only the voxels that exist: [0, 1, 2, 3, 4] -> [0.5, 2.5, 4].
    np.testing.assert_array_equal(
        downsample(np.arange(5, dtype=np.float64), (2,), "mean"), [0.5, 2.5, 4.0]
    )


def test_build_pyramid_keeps_nan(tmp_path: Path) -> None:
    data = np.ones((6, 6), np.float32)
    data[1, 1] = np.nan
    writer = create_ome_zarr(
        tmp_path / "n.ome.zarr",
        shape=data.shape,
        dtype="float32",
        chunks=(4, 4),
        axes="yx",
        levels=2,
    )
    with writer:
        writer.write_region((0, 0), data)
        writer.build_pyramid("mean")
    level1 = open_volume(tmp_path / "n.ome.zarr", level=1)[:]
    expected = brute_force_mean(data.astype(np.float64), (2, 2)).astype(np.float32)
    np.testing.assert_array_equal(level1, expected)  # array_equal treats NaN == NaN
    assert np.isnan(level1[0, 0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones((4, 4)), (2, 2.0), "mean"), r"factors \(2, 2\.0\) must hold integers"),
        ((np.ones((4, 4)), (2,), "mean"), r"factors must be 2 integers, found \(2,\)"),
        ((np.ones((4, 4)), (2, 0), "mean"), r"must hold integers >= 1; entry 1 is 0"),
        ((np.ones((4, 4)), (2, 2), "median"), r"method must be one of \('mean', 'nearest'\)"),
        (([[1, 2]], (1, 1), "mean"), r"block must be a numeric numpy array, found list"),
    ],
)
def test_downsample_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        downsample(*args)


def _raised_names(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name):
                found.append((target.id, node.lineno))
    return found


def test_library_raises_only_its_own_errors_and_never_asserts() -> None:
    """Static check of the sources: every ``raise`` names a VoxflowIOError subclass (or
    re-raises), and no ``assert`` stands in for an input check."""
    own = {
        name
        for name in dir(voxflow_io._errors)
        if isinstance(getattr(voxflow_io._errors, name), type)
        and issubclass(getattr(voxflow_io._errors, name), VoxflowIOError)
    }
    # A passed-in VoxflowIOError class, a collected one re-raised, a function building one.
    own |= {"error", "metadata_error"}
    problems = []
    for module in sorted(SOURCE.glob("*.py")):
        tree = ast.parse(module.read_text())
        problems += [
            f"{module.name}:{n.lineno} assert" for n in ast.walk(tree) if isinstance(n, ast.Assert)
        ]
        problems += [
            f"{module.name}:{line} raise {name}"
            for name, line in _raised_names(tree)
            if name not in own
        ]
    assert problems == []
