"""``predict`` at scale: resume after a kill (bitwise equal), refusal of another run's output,
DDP over 2 gloo processes (bitwise equal), empty blocks and masks skipped without the model,
read amplification with Morton order and the chunk cache, inputs and outputs on object stores
(moto's S3 server and a plain HTTP server on the loopback address, started here).

The references are independent of the code under test where it matters: an uninterrupted
single-process run for resume and DDP (a different code path: no done records read, one rank),
the brute-force list of blocks whose input region is all zero, and numpy masking.
"""

from __future__ import annotations

import functools
import importlib
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from voxflow_io import IncompleteStoreError, RemoteStoreError, create_ome_zarr, open_volume
from voxflow_segment.config import RunConfig
from voxflow_segment.errors import DataError, OutputExistsError, PredictResumeError
from voxflow_segment.prediction import predict
from voxflow_segment.synthetic import make_volume
from voxflow_slicing import block_plan

predict_module = importlib.import_module("voxflow_segment.prediction")

SHAPE = (40, 64, 64)
BLOCK = (16, 32, 32)


def write_image(path: Path, data: np.ndarray, chunks: tuple[int, ...]) -> Path:
    writer = create_ome_zarr(path, shape=data.shape, dtype=data.dtype, chunks=chunks, axes="zyx")
    writer.write_region((0,) * data.ndim, data)
    writer.finish()
    return path


def level0(path: Path) -> np.ndarray:
    group = zarr.open_group(str(path), mode="r")
    return np.asarray(group[group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]][...])


@pytest.fixture(scope="module")
def checkpoint(
    config_factory: Callable[[Path], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from voxflow_segment.training import train

    config = config_factory(tmp_path_factory.mktemp("scale-train") / "run")
    return train(RunConfig.model_validate(config), progress=False).checkpoint


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """40x64x64 uint16, chunks 8x16x16; the first 24 z-slices are all zero (empty input)."""
    data, _ = make_volume(SHAPE, seed=5)
    data[:24] = 0
    path = tmp_path_factory.mktemp("scale-input") / "input.ome.zarr"
    return write_image(path, data, (8, 16, 16)), data


@pytest.fixture(scope="module")
def reference(checkpoint: Path, image: tuple[Path, np.ndarray], tmp_path_factory) -> Path:
    """An uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("scale-reference") / "reference.ome.zarr"
    predict(checkpoint, image[0], out, accelerator="cpu", block_shape=BLOCK, progress=False)
    return out


def fail_after(blocks: int) -> Callable[[Any, int], None]:
    """A ``DoneRecord.mark`` that records the block, then fails once ``blocks`` are done
    (a crash between two blocks)."""
    original = predict_module.DoneRecord.mark
    marked: list[int] = []

    def failing(self: Any, number: int) -> None:
        original(self, number)
        marked.append(number)
        if len(marked) == blocks:
            raise RuntimeError("killed by the test")

    return failing


def empty_blocks(data: np.ndarray) -> set[int]:
    """Brute force: blocks whose every window reads only zeros."""
    plan = block_plan(SHAPE, (16, 16, 16), BLOCK, overlap=0.5)
    return {block.number for block in plan if not data[block.input_region].any()}


def test_empty_blocks_are_skipped_without_the_model(
    checkpoint: Path,
    image: tuple[Path, np.ndarray],
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected_empty = empty_blocks(image[1])
    assert 0 < len(expected_empty) < 18
    calls: list[int] = []
    original = predict_module._Forward.__call__

    def counting(self: Any, batch: np.ndarray) -> Any:
        calls.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(predict_module._Forward, "__call__", counting)
    out = tmp_path / "out.ome.zarr"
    result = predict(
        checkpoint, image[0], out, accelerator="cpu", block_shape=BLOCK, progress=False
    )
    plan = block_plan(SHAPE, (16, 16, 16), BLOCK, overlap=0.5)
    assert result.empty == len(expected_empty)
    assert result.predicted == len(plan) - len(expected_empty)
    assert sum(calls) == sum(
        len(plan.block(n).windows) for n in range(len(plan)) if n not in expected_empty
    )
    labels = level0(out)
    for number in expected_empty:
        assert not labels[plan.block(number).region].any()  # written as the fill value
    np.testing.assert_array_equal(labels, level0(reference))


def test_mask_skips_blocks_and_zeroes_voxels_outside_it(
    checkpoint: Path, image: tuple[Path, np.ndarray], reference: Path, tmp_path: Path
) -> None:
    mask = np.zeros((20, 32, 32), np.uint8)  # half resolution
    mask[12:, :, :10] = 1
    mask_path = write_image(tmp_path / "mask.ome.zarr", mask, (10, 16, 16))
    out = tmp_path / "masked.ome.zarr"
    result = predict(
        checkpoint,
        image[0],
        out,
        accelerator="cpu",
        block_shape=BLOCK,
        mask=mask_path,
        progress=False,
    )
    full = mask.repeat(2, 0).repeat(2, 1).repeat(2, 2).astype(bool)
    expected = np.where(full, level0(reference), 0)
    np.testing.assert_array_equal(level0(out), expected)
    plan = block_plan(SHAPE, (16, 16, 16), BLOCK, overlap=0.5)
    masked_out = sum(not full[b.region].any() for b in plan)
    assert result.empty >= masked_out > 0


def test_blocks_of_several_chunks_give_the_same_bytes(
    checkpoint: Path, image: tuple[Path, np.ndarray], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "chunked.ome.zarr"
    result = predict(
        checkpoint,
        image[0],
        out,
        accelerator="cpu",
        chunks=(8, 16, 16),
        block_shape=BLOCK,
        progress=False,
    )
    assert open_volume(out).chunks == (8, 16, 16)
    assert result.windows > result.grid_windows  # windows across block borders run twice
    np.testing.assert_array_equal(level0(out), level0(reference))
    sharded = tmp_path / "sharded.ome.zarr"
    predict(
        checkpoint,
        image[0],
        sharded,
        accelerator="cpu",
        chunks=(8, 16, 16),
        block_shape=BLOCK,
        sharded=True,
        progress=False,
    )
    array = zarr.open_group(str(sharded), mode="r")["0"]
    assert (array.chunks, array.shards) == ((8, 16, 16), BLOCK)
    np.testing.assert_array_equal(level0(sharded), level0(reference))
    with pytest.raises(
        DataError,
        match=r"block_shape \(12, 32, 32\) must be a multiple of the output chunks \(8, 16, 16\) "
        r"along every axis \(or span the axis\): axes \[0\] are not",
    ):
        predict(
            checkpoint,
            image[0],
            tmp_path / "bad.ome.zarr",
            accelerator="cpu",
            chunks=(8, 16, 16),
            block_shape=(12, 32, 32),
            progress=False,
        )


def test_read_amplification_with_and_without_the_cache(
    checkpoint: Path, image: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    cached = predict(
        checkpoint,
        image[0],
        tmp_path / "a.ome.zarr",
        accelerator="cpu",
        block_shape=BLOCK,
        progress=False,
    )
    uncached = predict(
        checkpoint,
        image[0],
        tmp_path / "b.ome.zarr",
        accelerator="cpu",
        block_shape=BLOCK,
        cache_bytes=0,
        progress=False,
    )
    assert cached.read_amplification <= 1.2
    assert uncached.read_amplification > 1.5


def test_a_failed_run_resumes_and_another_run_is_refused(
    checkpoint: Path,
    image: tuple[Path, np.ndarray],
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out.ome.zarr"
    failing = fail_after(5)
    with monkeypatch.context() as patch:
        patch.setattr(predict_module.DoneRecord, "mark", failing)
        with pytest.raises(RuntimeError, match="killed by the test"):
            predict(checkpoint, image[0], out, accelerator="cpu", block_shape=BLOCK, progress=False)
    with pytest.raises(IncompleteStoreError):
        open_volume(out)
    with pytest.raises(
        PredictResumeError,
        match=r"an unfinished prediction of another run is there \(tta: was 1, now 2\); rerun "
        r"the command that started it to resume, or pass --overwrite to start over",
    ):
        predict(
            checkpoint, image[0], out, tta=2, accelerator="cpu", block_shape=BLOCK, progress=False
        )
    result = predict(
        checkpoint, image[0], out, accelerator="cpu", block_shape=BLOCK, progress=False
    )
    assert result.resumed == 5
    assert result.predicted + result.empty == result.blocks - 5
    np.testing.assert_array_equal(level0(out), level0(reference))
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=True"):
        predict(checkpoint, image[0], out, accelerator="cpu", block_shape=BLOCK, progress=False)


def cli_predict(checkpoint: Path, source: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "voxflow_segment.cli",
        "predict",
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(source),
        "--output",
        str(out),
        "--accelerator",
        "cpu",
        "--block-shape",
        *map(str, BLOCK),
        "--no-progress",
        *extra,
    ]


def done_count(out: Path) -> int:
    try:
        return int(np.asarray(zarr.open_group(str(out), mode="r")["voxflow_predict_done"][:]).sum())
    except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
        return 0


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_bytes(
    checkpoint: Path, image: tuple[Path, np.ndarray], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed.ome.zarr"
    command = cli_predict(checkpoint, image[0], out)
    blocks = len(block_plan(SHAPE, (16, 16, 16), BLOCK, overlap=0.5))
    rng = random.Random(11)
    kills = 0
    for _ in range(3):
        before = done_count(out)
        if before >= blocks - 2:
            break
        target = rng.randint(before + 1, blocks - 2)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while done_count(out) < target and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += process.returncode == -signal.SIGKILL
        with pytest.raises(IncompleteStoreError):
            open_volume(out)
    assert kills >= 2
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr
    resumed = int(finished.stdout.split(" finished by an earlier run")[0].rsplit(", ", 1)[1])
    assert 0 < resumed < blocks
    np.testing.assert_array_equal(level0(out), level0(reference))
    assert open_volume(out).shape == SHAPE


@pytest.mark.slow
def test_ddp_over_two_gloo_processes_writes_the_same_bytes(
    checkpoint: Path, image: tuple[Path, np.ndarray], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp.ome.zarr"
    finished = subprocess.run(
        cli_predict(checkpoint, image[0], out, "--devices", "2"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.count("voxflow-segment predict:") == 1  # one summary, from rank 0
    assert "on 2 process(es)" in finished.stdout
    np.testing.assert_array_equal(level0(out), level0(reference))


# --------------------------------------------------------------------------- object stores
S3_KEY, S3_SECRET, BUCKET = "voxflow-key", "voxflow-secret", "predictions"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port) with one bucket; yields its endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def served(image: tuple[Path, np.ndarray]) -> Iterator[str]:
    """The input's folder over plain HTTP on 127.0.0.1; yields the input's URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """No request log on stderr."""

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(image[0].parent))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/{image[0].name}"
    server.shutdown()
    server.server_close()


def read_s3(url: str, endpoint: str) -> np.ndarray:
    options = {"endpoint_url": endpoint, "key": S3_KEY, "secret": S3_SECRET}
    return open_volume(url, storage_options=options)[...]


def test_http_input_to_s3_output_with_aws_variables(
    checkpoint: Path, served: str, s3: str, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    out = f"s3://{BUCKET}/from-http.ome.zarr"
    result = predict(checkpoint, served, out, accelerator="cpu", block_shape=BLOCK, progress=False)
    assert result.output == out
    np.testing.assert_array_equal(read_s3(out, s3), level0(reference))


def test_s3_prediction_resumes_and_is_refused_over_http(
    checkpoint: Path,
    image: tuple[Path, np.ndarray],
    s3: str,
    served: str,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = {"endpoint_url": s3, "key": S3_KEY, "secret": S3_SECRET}
    source = f"s3://{BUCKET}/input.ome.zarr"
    writer = create_ome_zarr(
        source,
        shape=SHAPE,
        dtype=np.uint16,
        chunks=(8, 16, 16),
        axes="zyx",
        storage_options=options,
    )
    writer.write_region((0, 0, 0), image[1])
    writer.finish()
    out = f"s3://{BUCKET}/resumed.ome.zarr"
    failing = fail_after(4)
    arguments: dict[str, Any] = {
        "accelerator": "cpu",
        "block_shape": BLOCK,
        "progress": False,
        "storage_options": options,
    }
    with monkeypatch.context() as patch:
        patch.setattr(predict_module.DoneRecord, "mark", failing)
        with pytest.raises(RuntimeError, match="killed by the test"):
            predict(checkpoint, source, out, **arguments)
    with pytest.raises(IncompleteStoreError):
        open_volume(out, storage_options=options)
    result = predict(checkpoint, source, out, **arguments)
    assert result.resumed == 4
    np.testing.assert_array_equal(read_s3(out, s3), level0(reference))
    with pytest.raises(RemoteStoreError, match=r"http://.*: http:// is read-only"):
        predict(
            checkpoint,
            image[0],
            served.replace("input", "output"),
            accelerator="cpu",
            progress=False,
        )
